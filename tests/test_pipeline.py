"""Train/eval batching: seeded order, epochs are permutations, resumable, process slices."""

import numpy as np
import pytest

from mtl_jax.data.base import ArrayDataset
from mtl_jax.data.pipeline import TrainIterator, eval_batches


def _ds(n=10):
  x = np.arange(n, dtype=np.float32)[:, None]
  return ArrayDataset(x, {"t": np.arange(n)}, {"t": np.ones(n, bool)})


def _ids(batch):
  return batch["inputs"][:, 0].astype(int).tolist()


def test_each_epoch_is_a_permutation_and_epochs_differ():
  it = TrainIterator(_ds(10), 5, seed=0)
  stream = sum((_ids(next(it)) for _ in range(6)), [])
  epochs = [stream[i:i + 10] for i in range(0, 30, 10)]
  for e in epochs:
    assert sorted(e) == list(range(10))
  assert epochs[0] != epochs[1]


def test_batches_cross_epoch_boundaries_without_loss():
  it = TrainIterator(_ds(10), 4, seed=1)
  stream = sum((_ids(next(it)) for _ in range(5)), [])  # 20 = two epochs exactly
  assert sorted(stream[:10]) == sorted(stream[10:]) == list(range(10))


def test_same_seed_same_order_other_seed_other_order():
  a = [_ids(next(TrainIterator(_ds(), 5, seed=3))) for _ in range(2)]
  assert a[0] == a[1]
  assert _ids(next(TrainIterator(_ds(), 5, seed=4))) != a[0]


def test_resume_from_state_continues_on_the_next_batch():
  it = TrainIterator(_ds(), 3, seed=0)
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [_ids(next(it)) for _ in range(4)]
  fresh = TrainIterator(_ds(), 3, seed=0)
  fresh.set_state(state)
  assert [_ids(next(fresh)) for _ in range(4)] == expected


def test_process_slices_tile_the_global_batch():
  full = TrainIterator(_ds(), 4, seed=0)
  parts = [TrainIterator(_ds(), 4, seed=0, process_index=p, process_count=2) for p in range(2)]
  for _ in range(3):
    assert _ids(next(parts[0])) + _ids(next(parts[1])) == _ids(next(full))


def test_eval_batches_pad_with_masked_rows():
  batches = list(eval_batches(_ds(7), 4))
  assert len(batches) == 2
  assert batches[1]["mask"]["t"].tolist() == [True, True, True, False]
  assert _ids(batches[0]) + _ids(batches[1])[:3] == list(range(7))


# ------------------------------------------------------------- pytree inputs


def _dict_ds(n=10, length=4):
  """Token-style inputs: every leaf encodes the example id, so rows can be traced."""
  ids = np.arange(n)[:, None] * 100 + np.arange(length)[None, :]
  inputs = {"input_ids": ids.astype(np.int32), "attention_mask": np.ones((n, length), np.int32),
            "token_type_ids": (ids % 2).astype(np.int32), "extra": {"row": np.arange(n, dtype=np.float32)}}
  tok_mask = np.arange(length)[None, :] < (np.arange(n)[:, None] % length + 1)
  return ArrayDataset(inputs, {"t": np.arange(n), "ner": np.where(tok_mask, 1, -100)},
                      {"t": np.ones(n, bool), "ner": tok_mask})


def _dict_ids(batch):
  rows = (batch["inputs"]["input_ids"][:, 0] // 100).tolist()
  # Every leaf, label and mask was indexed with the same rows.
  assert batch["inputs"]["extra"]["row"].astype(int).tolist() == rows
  np.testing.assert_array_equal(batch["inputs"]["token_type_ids"], batch["inputs"]["input_ids"] % 2)
  assert batch["labels"]["t"].tolist() == rows
  return rows


def test_dict_inputs_follow_the_same_order_as_array_inputs():
  a, d = TrainIterator(_ds(10), 4, seed=5), TrainIterator(_dict_ds(10), 4, seed=5)
  for _ in range(6):
    assert _dict_ids(next(d)) == _ids(next(a))
  state = d.get_state()
  expected = [_dict_ids(next(d)) for _ in range(3)]
  fresh = TrainIterator(_dict_ds(10), 4, seed=5)
  fresh.set_state(state)
  assert [_dict_ids(next(fresh)) for _ in range(3)] == expected


def test_dict_inputs_subset_select_and_eval_padding():
  ds = _dict_ds(7)
  assert len(ds) == 7
  sub = ds.subset(np.array([5, 1])).select_tasks(["ner"])
  assert sub.task_names == ("ner",) and len(sub) == 2
  assert _dict_ids({"inputs": sub.inputs, "labels": {"t": np.array([5, 1])}}) == [5, 1]
  np.testing.assert_array_equal(sub.mask["ner"], ds.mask["ner"][[5, 1]])
  batches = list(eval_batches(ds, 4))
  assert [_dict_ids(b)[:4] for b in batches][0] == [0, 1, 2, 3]
  last = batches[1]
  assert last["inputs"]["input_ids"].shape == (4, 4)
  # The padded row's per-token mask is cleared on the whole row; real rows keep theirs.
  np.testing.assert_array_equal(last["mask"]["ner"][:3], ds.mask["ner"][4:7])
  assert not last["mask"]["ner"][3].any() and last["mask"]["t"].tolist() == [True] * 3 + [False]


def test_inputs_of_different_lengths_name_the_leaf():
  with pytest.raises(ValueError, match=r"inputs\['input_ids'\] has shape \(10, 4\) but "
                                       r"inputs\['attention_mask'\] has 9 examples"):
    ArrayDataset({"input_ids": np.zeros((10, 4)), "attention_mask": np.zeros((9, 4))},
                 {"t": np.zeros(10)}, {"t": np.ones(10, bool)})
