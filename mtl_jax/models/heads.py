"""Task heads. Tasks of one TaskGroup share one stacked parameter tensor with
a leading task axis, so T heads are one einsum and T=128 compiles like T=1."""

from typing import Dict, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.tasks import TaskGroup


class StackedDense(nn.Module):
  """``num_tasks`` independent Dense layers stored as kernel [T, D, O], bias [T, O].

  Accepts shared features [B, D] (broadcast to every task) or per-task
  features [T, B, D]; returns [T, B, O]. Each task's slice is initialised like
  an ordinary Dense layer (LeCun normal over its own fan-in).
  """
  num_tasks: int
  features: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    kernel = self.param("kernel", init, (self.num_tasks, d, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.num_tasks, self.features))
    if x.ndim == 2:
      y = jnp.einsum("bd,tdo->tbo", x, kernel)
    elif x.ndim == 3:
      y = jnp.einsum("tbd,tdo->tbo", x, kernel)
    else:
      raise ValueError(f"StackedDense expects [B, D] or [T, B, D] features, got {x.shape}")
    return y + bias[:, None, :]


class TaskHeads(nn.Module):
  """One stacked head (optional hidden layers, then the output layer) per group.

  Parameter paths: ``heads/<kind>_<n>/kernel`` for the output layer and
  ``heads/<kind>_<n>_hidden_<j>/kernel`` for hidden layers; row t of a group's
  tensors belongs to ``group.names[t]``.
  """
  groups: Sequence[TaskGroup]
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, features: jax.Array) -> Dict[str, jax.Array]:
    out = {}
    for g in self.groups:
      h = features
      for j, width in enumerate(self.hidden):
        h = nn.relu(StackedDense(len(g.names), width, name=f"{g.key}_hidden_{j}")(h))
      out[g.key] = StackedDense(len(g.names), g.num_outputs, name=g.key)(h)
    return out


def outputs_by_task(groups: Sequence[TaskGroup], outputs: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
  """Unstacks group outputs [T_g, B, n] into {task: [B, n]} (for eval and users)."""
  return {name: outputs[g.key][t] for g in groups for t, name in enumerate(g.names)}
