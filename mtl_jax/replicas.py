"""``num_seeds``: N independent replicas trained as one program.

Every leaf of the train state gets a leading replica axis and the step is
``jax.vmap``-ed over it, so an N-seed study costs one compile and runs as
wide batched matmuls instead of N small programs. Replica r is the run with
seed ``config.seed + r``: its own init, dropout stream and data order. With
N = 1 nothing changes (no replica axis), so single runs and their
checkpoints look as before.
"""

from typing import Any, Callable, Dict, List, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from mtl_jax import parallel
from mtl_jax.metrics import mean_se
from mtl_jax.data.pipeline import TrainIterator


class Replicas:

  def __init__(self, num: int, seed: int):
    if num < 1:
      raise ValueError(f"num_seeds must be >= 1, got {num}")
    self.num = num
    self.seeds = [seed + r for r in range(num)]

  @property
  def stacked(self) -> bool:
    return self.num > 1

  def vmap(self, fn: Callable, in_axes: Any = 0) -> Callable:
    return jax.vmap(fn, in_axes=in_axes) if self.stacked else fn

  def keys(self) -> jax.Array:
    keys = [jax.random.PRNGKey(s) for s in self.seeds]
    return jnp.stack(keys) if self.stacked else keys[0]

  def broadcast(self, tree):
    """Gives every leaf the replica axis (same value for every replica)."""
    if not self.stacked:
      return tree
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (self.num,) + jnp.shape(x)), tree)

  def batch_sharding(self, mesh) -> NamedSharding:
    spec = P(None, parallel.DATA_AXIS) if self.stacked else P(parallel.DATA_AXIS)
    return NamedSharding(mesh, spec)

  def iterators(self, dataset, batch_size: int) -> List[TrainIterator]:
    return [TrainIterator(dataset, batch_size, s, jax.process_index(), jax.process_count())
            for s in self.seeds]

  def next_batch(self, iterators: Sequence[TrainIterator], mesh):
    batches = [next(it) for it in iterators]
    batch = batches[0] if not self.stacked else jax.tree.map(lambda *xs: np.stack(xs), *batches)
    return parallel.shard_batch(batch, mesh, self.batch_sharding(mesh))

  def data_state(self, iterators) -> dict:
    if not self.stacked:
      return iterators[0].get_state()
    return {"replicas": [it.get_state() for it in iterators]}

  def set_data_state(self, iterators, state: dict) -> None:
    states = state["replicas"] if self.stacked else [state]
    if len(states) != len(iterators):
      raise ValueError(f"checkpoint has data state for {len(states)} replicas, config asks "
                       f"for {len(iterators)}")
    for it, s in zip(iterators, states):
      it.set_state(s)

  def step(self, state) -> int:
    return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])

  def unstack(self, tree) -> List[Any]:
    """Host copies of each replica's slice (one element when not stacked)."""
    if not self.stacked:
      return [tree]
    return [jax.tree.map(lambda x, r=r: x[r], tree) for r in range(self.num)]

  def aggregate(self, per_replica: List[Dict[str, Dict[str, float]]]) -> Dict[str, Dict[str, float]]:
    """{task: {metric: mean}} plus ``<metric>_se`` (standard error over replicas)."""
    if not self.stacked:
      return per_replica[0]
    out = {}
    for task, metrics in per_replica[0].items():
      out[task] = {}
      for m in metrics:
        mean, se, _ = mean_se([r[task][m] for r in per_replica])
        out[task][m] = mean
        if m != "count":
          out[task][f"{m}_se"] = se
    return out
