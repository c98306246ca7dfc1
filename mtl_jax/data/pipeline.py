"""Input pipeline: deterministic, checkpointable batches from an ArrayDataset.

Train order comes from grain (`MapDataset.range(n).shuffle(seed).repeat()`),
so it is a pure function of the seed, reshuffled every epoch, and its
iterator state (`{"next_index": k}`) is saved in checkpoints: a resumed run
continues on exactly the next batch. Every process computes the same global
index batch and keeps its own contiguous slice, which is what
`jax.make_array_from_process_local_data` expects.
"""

from typing import Iterator

import grain
import numpy as np

from mtl_jax.data.base import ArrayDataset


def _local_slice(global_size: int, process_index: int, process_count: int) -> slice:
  if global_size % process_count:
    raise ValueError(f"global batch size {global_size} is not divisible by the "
                     f"{process_count} processes")
  per = global_size // process_count
  return slice(process_index * per, (process_index + 1) * per)


class TrainIterator:
  """Endless shuffled batches; ``get_state``/``set_state`` make it resumable."""

  def __init__(self, dataset: ArrayDataset, global_batch_size: int, seed: int,
               process_index: int = 0, process_count: int = 1):
    if len(dataset) == 0:
      raise ValueError("the training split is empty")
    self._dataset = dataset
    self._slice = _local_slice(global_batch_size, process_index, process_count)
    ds = grain.MapDataset.range(len(dataset)).shuffle(seed=seed).repeat()
    self._it = iter(ds.batch(global_batch_size, drop_remainder=True))

  def __iter__(self) -> "TrainIterator":
    return self

  def __next__(self) -> dict:
    idx = np.asarray(next(self._it))[self._slice]
    return self._dataset.take(idx)

  def get_state(self) -> dict:
    return dict(self._it.get_state())

  def set_state(self, state: dict) -> None:
    self._it.set_state(dict(state))


def eval_batches(dataset: ArrayDataset, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict]:
  """Every example once, in order; the last batch is padded with mask=False rows.

  Padding keeps one compiled eval shape; the masks keep padded rows out of
  every metric.
  """
  sl = _local_slice(global_batch_size, process_index, process_count)
  n = len(dataset)
  for start in range(0, n, global_batch_size):
    idx = np.arange(start, start + global_batch_size)
    valid = idx < n
    batch = dataset.take(np.where(valid, idx, 0)[sl])
    batch["mask"] = {k: m & valid[sl] for k, m in batch["mask"].items()}
    yield batch
