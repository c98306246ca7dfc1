"""Train batches for the device mesh: one seeded iterator per replica, stacked and sharded.

With ``num_seeds=N`` each replica reads its own data order (seed
``config.seed + r``) and the batch gets a leading replica axis; the data
axis is sharded on the mesh's ``data`` axis either way. The iterator is a
``TrainIterator`` over one dataset or, with several datasets or stages, a
``mixing.MixtureIterator`` (``make_iterator(seed)``).

``prefetch=k`` builds and transfers up to ``k`` batches ahead in a
background thread, so the host work (sampling, gathering, the transfer)
overlaps the running step instead of adding to it. The checkpointed state
and the logged stats are those of the batches handed out, not of the ones
prepared ahead, so resume stays bitwise.

A streaming split (``data/streaming.py``) reads and decodes its records in
``take``, i.e. in the prefetch thread; with ``num_workers > 0`` a
``StreamingTrainIterator`` decodes in grain worker processes and the
thread only stacks and transfers.
"""

import queue
import threading
from typing import Callable, Dict, Optional, Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mtl_jax import parallel
from mtl_jax.data.pipeline import TrainIterator
from mtl_jax.data.streaming import StreamingTrainIterator


class TrainFeed:
  """Checkpointable global batches for ``len(seeds)`` replicas (no replica axis for one)."""

  def __init__(self, dataset, batch_size: int, seeds: Sequence[int],
               make_iterator: Optional[Callable[[int], object]] = None, name: str = "data",
               prefetch: int = 0, groups=None):
    self.stacked = len(seeds) > 1
    self._prefetch = int(prefetch)
    self._queue = None
    self._handed = None  # (state, stats) after the last batch handed out, when prefetching
    self._batch_size = batch_size
    self._name = name
    self._size = None if dataset is None else len(dataset)
    if make_iterator is None and getattr(dataset, "num_workers", 0):
      # A streaming split decoded by grain worker processes (data/streaming.py).
      make_iterator = lambda s: StreamingTrainIterator(  # noqa: E731
          dataset, batch_size, s, jax.process_index(), jax.process_count(), dataset.num_workers)
    if make_iterator is None:
      make_iterator = lambda s: TrainIterator(dataset, batch_size, s, jax.process_index(),  # noqa
                                              jax.process_count(), groups)
    self._dataset, self._seeds, self._make_iterator = dataset, tuple(seeds), make_iterator
    self.iterators = [make_iterator(s) for s in seeds]

  def restarted(self, prefetch: int = 0) -> "TrainFeed":
    """A new feed over the same data and seeds from the first batch (e.g. with prefetching)."""
    return TrainFeed(self._dataset, self._batch_size, self._seeds, self._make_iterator,
                     self._name, prefetch)

  def sharding(self, mesh) -> NamedSharding:
    spec = P(None, parallel.DATA_AXIS) if self.stacked else P(parallel.DATA_AXIS)
    return NamedSharding(mesh, spec)

  def next_local(self):
    """The next batch on the host (NumPy, this process's slice), replica axis if stacked."""
    batches = [next(it) for it in self.iterators]
    return batches[0] if not self.stacked else jax.tree.map(lambda *xs: np.stack(xs), *batches)

  def next(self, mesh):
    if not self._prefetch:
      return parallel.shard_batch(self.next_local(), mesh, self.sharding(mesh))
    if self._queue is None:
      self._start(mesh)
    item = self._queue.get()
    if isinstance(item, BaseException):
      raise item
    batch, self._handed = item
    return batch

  def _start(self, mesh) -> None:
    self._initial = (self._iterator_state(), self._iterator_stats())
    self._queue = queue.Queue(maxsize=self._prefetch)
    self._stop = threading.Event()

    def put(item):
      while not self._stop.is_set():
        try:
          self._queue.put(item, timeout=0.1)
          return
        except queue.Full:
          pass

    def work():
      try:
        while not self._stop.is_set():
          batch = parallel.shard_batch(self.next_local(), mesh, self.sharding(mesh))
          put((batch, (self._iterator_state(), self._iterator_stats())))
      except BaseException as e:  # noqa: BLE001 -- re-raised in the consumer
        put(e)

    self._thread = threading.Thread(target=work, daemon=True, name="TrainFeed.prefetch")
    self._thread.start()

  def close(self) -> None:
    """Stops the prefetch thread (a no-op without prefetching)."""
    if self._queue is not None:
      self._stop.set()
      self._thread.join()

  def stats(self) -> Dict[str, float]:
    if self._queue is not None:
      return self._handed[1] if self._handed else self._initial[1]
    return self._iterator_stats()

  def _iterator_stats(self) -> Dict[str, float]:
    """Examples seen and epochs per dataset (global batches; mean over replicas)."""
    per = []
    for it in self.iterators:
      if hasattr(it, "stats"):
        per.append(it.stats())
      else:
        seen = float(it.get_state()["next_index"] * self._batch_size)
        per.append({f"data/{self._name}/examples": seen,
                    f"data/{self._name}/epochs": seen / self._size})
    return {k: float(np.mean([p[k] for p in per])) for k in per[0]}

  def get_state(self) -> dict:
    if self._queue is not None:
      return self._handed[0] if self._handed else self._initial[0]
    return self._iterator_state()

  def _iterator_state(self) -> dict:
    if not self.stacked:
      return self.iterators[0].get_state()
    return {"replicas": [it.get_state() for it in self.iterators]}

  def set_state(self, state: dict) -> None:
    if self._queue is not None:
      raise RuntimeError("set_state after prefetching started")
    states = state["replicas"] if self.stacked else [state]
    if len(states) != len(self.iterators):
      raise ValueError(f"checkpoint has data state for {len(states)} replicas, config asks "
                       f"for {len(self.iterators)}")
    for it, s in zip(self.iterators, states):
      it.set_state(s)
