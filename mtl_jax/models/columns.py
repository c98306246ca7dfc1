"""Building blocks for schemes with one column (or expert) per task.

Per-task features are [T, B, D] with T = every task of every group. Column t
belongs to ``task_order(groups)[t]``: the groups' task names concatenated in
group order (the order of ``group_tasks``, i.e. first appearance of each
(kind, num_outputs)), so group g reads rows ``task_slices(groups)[g.key]``.
"""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import kinds
from mtl_jax.models.heads import StackedDense
from mtl_jax.models.trunks import DenseBlock, trunk_class
from mtl_jax.tasks import TaskGroup


def task_order(groups: Sequence[TaskGroup]) -> Tuple[str, ...]:
  """Task name of each row of the per-task feature axis."""
  return tuple(n for g in groups for n in g.names)


def task_slices(groups: Sequence[TaskGroup]) -> Dict[str, Tuple[int, int]]:
  """``{group.key: (start, stop)}``: the rows of the task axis that feed each group."""
  out, start = {}, 0
  for g in groups:
    out[g.key] = (start, start + len(g.names))
    start += len(g.names)
  return out


def _stack(cls, size: int, in_axis):
  """``cls`` vmapped into ``size`` independent copies (params and dropout split).

  ``train`` must be passed positionally: lifted vmap ignores keyword arguments.
  """
  return nn.vmap(cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                 in_axes=(in_axis, None), out_axes=0, axis_size=size)


def stacked_trunk(trunk_config, size: int, name: str) -> nn.Module:
  """``size`` independent trunks on one shared input: [B, ...] -> [size, B, D].

  Every parameter gets a leading axis of ``size``:
  ``<name>/block_0/Dense_0/kernel`` is [size, D_in, D_out].
  """
  cls, kwargs = trunk_class(trunk_config)
  return _stack(cls, size, None)(**kwargs, name=name)


class ColumnHeads(nn.Module):
  """TaskHeads for per-task features [T, B, (positions,) D]: group g reads its own rows.

  Same parameter paths and shapes as TaskHeads (``heads/<kind>_<n>/kernel``
  [T_g, D, n], ``heads/<kind>_<n>_hidden_<j>/kernel``), so hidden layers act
  as per-task towers.
  """
  groups: Sequence[TaskGroup]
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, features: jax.Array) -> Dict[str, jax.Array]:
    n = len(task_order(self.groups))
    if features.ndim < 3 or features.shape[0] != n:
      raise ValueError(f"ColumnHeads expects per-task features [{n}, B, ..., D], got "
                       f"{features.shape}")
    out = {}
    for g in self.groups:
      kind = kinds.get(g.kind)
      start, stop = task_slices(self.groups)[g.key]
      h = features[start:stop]
      for j, width in enumerate(self.hidden):
        h = nn.relu(StackedDense(len(g.names), width, kind.output_axes,
                                 name=f"{g.key}_hidden_{j}")(h))
      out[g.key] = StackedDense(len(g.names), kind.head_outputs(g.num_outputs),
                                kind.output_axes, name=g.key)(h)
    return out


def stitch_init(diagonal: float):
  """T x T mixing near identity: ``diagonal`` on the diagonal, the rest spread evenly.

  Rows sum to 1, so a stitch keeps the feature scale; ``diagonal=1`` is exactly
  the identity (independent columns).
  """
  def init(key, shape, dtype=jnp.float32):
    del key
    t = shape[0]
    off = 0.0 if t == 1 else (1.0 - diagonal) / (t - 1)
    return jnp.asarray(np.where(np.eye(t, dtype=bool), 1.0 if t == 1 else diagonal, off), dtype)
  return init


class CrossStitchMLP(nn.Module):
  """T columns of the MLP trunk; after each block a learned T x T stitch mixes them.

  h_t <- sum_s stitch_i[t, s] h_s (Misra et al., 2016). Paths:
  ``block_<i>/Dense_0/kernel`` [T, D_in, D_out] (as the single_task columns)
  and ``stitch_<i>`` [T, T]. Input [B, ...] (flattened), output [T, B, D].
  """
  num_tasks: int
  features: Sequence[int] = (128, 128)
  act: str = "relu"
  dropout: float = 0.0
  num_blocks: int = -1
  stitch_diagonal: float = 0.9

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = x.reshape(x.shape[0], -1)
    n = len(self.features) if self.num_blocks < 0 else self.num_blocks
    for i, f in enumerate(self.features[:n]):
      block = _stack(DenseBlock, self.num_tasks, None if x.ndim == 2 else 0)
      x = block(f, self.act, self.dropout, name=f"block_{i}")(x, train)
      stitch = self.param(f"stitch_{i}", stitch_init(self.stitch_diagonal),
                          (self.num_tasks, self.num_tasks))
      x = jnp.einsum("ts,sbd->tbd", stitch, x)
    if x.ndim == 2:  # no blocks: every column sees the input
      x = jnp.broadcast_to(x, (self.num_tasks,) + x.shape)
    return x
