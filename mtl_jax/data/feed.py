"""Train batches for the device mesh: one seeded iterator per replica, stacked and sharded.

With ``num_seeds=N`` each replica reads its own data order (seed
``config.seed + r``) and the batch gets a leading replica axis; the data
axis is sharded on the mesh's ``data`` axis either way.
"""

from typing import Sequence

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mtl_jax import parallel
from mtl_jax.data.pipeline import TrainIterator


class TrainFeed:
  """Checkpointable global batches for ``len(seeds)`` replicas (no replica axis for one)."""

  def __init__(self, dataset, batch_size: int, seeds: Sequence[int]):
    self.stacked = len(seeds) > 1
    self.iterators = [TrainIterator(dataset, batch_size, s, jax.process_index(),
                                    jax.process_count()) for s in seeds]

  def sharding(self, mesh) -> NamedSharding:
    spec = P(None, parallel.DATA_AXIS) if self.stacked else P(parallel.DATA_AXIS)
    return NamedSharding(mesh, spec)

  def next(self, mesh):
    batches = [next(it) for it in self.iterators]
    batch = batches[0] if not self.stacked else jax.tree.map(lambda *xs: np.stack(xs), *batches)
    return parallel.shard_batch(batch, mesh, self.sharding(mesh))

  def get_state(self) -> dict:
    if not self.stacked:
      return self.iterators[0].get_state()
    return {"replicas": [it.get_state() for it in self.iterators]}

  def set_state(self, state: dict) -> None:
    states = state["replicas"] if self.stacked else [state]
    if len(states) != len(self.iterators):
      raise ValueError(f"checkpoint has data state for {len(states)} replicas, config asks "
                       f"for {len(self.iterators)}")
    for it, s in zip(self.iterators, states):
      it.set_state(s)
