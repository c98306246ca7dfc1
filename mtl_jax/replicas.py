"""``num_seeds``: N independent replicas trained as one program.

Every leaf of the train state gets a leading replica axis and the step is
``jax.vmap``-ed over it, so an N-seed study costs one compile and runs as
wide batched matmuls instead of N small programs. Replica r is the run with
seed ``config.seed + r``: its own init, dropout stream and data order (the
data side is ``mtl_jax.data.feed.TrainFeed``; the mean ± s.e. over replicas
is ``mtl_jax.evaluation.aggregate_replicas``). With N = 1 nothing changes
(no replica axis), so single runs and their checkpoints look as before.
"""

from typing import Any, Callable, List

import jax
import jax.numpy as jnp
import numpy as np


class Replicas:
  """The replica axis: vmapping, per-replica keys, and moving trees on and off it."""

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

  def unstack(self, tree) -> List[Any]:
    """Each replica's slice (one element when not stacked)."""
    if not self.stacked:
      return [tree]
    return [jax.tree.map(lambda x, r=r: x[r], tree) for r in range(self.num)]

  def first(self, tree):
    """Replica 0's slice: the shapes every replica shares."""
    return self.unstack(tree)[0]

  def step(self, state) -> int:
    return int(np.asarray(jax.device_get(state.step)).reshape(-1)[0])
