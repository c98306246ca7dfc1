"""Train/eval batching: seeded order, epochs are permutations, resumable, process slices."""

import numpy as np

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
