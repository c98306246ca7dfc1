"""Task heads. Tasks of one TaskGroup share one stacked parameter tensor with
a leading task axis, so T heads are one einsum and T=128 compiles like T=1."""

from typing import Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax import kinds
from mtl_jax.tasks import TaskGroup


class StackedDense(nn.Module):
  """``num_tasks`` independent Dense layers stored as kernel [T, D, O], bias [T, O].

  Accepts shared features [B, ..., D] (broadcast to every task) or per-task
  features [T, B, ..., D]; returns [T, B, ..., O]. ``extra_axes`` is the
  number of axes between batch and features (1 for per-token or
  per-candidate features [B, L, D]); it is what tells [B, L, D] (shared) from
  [T, B, D] (per task). Each task's slice is initialised like an ordinary
  Dense layer (LeCun normal over its own fan-in).
  """
  num_tasks: int
  features: int
  extra_axes: int = 0

  @nn.compact
  def __call__(self, x: jax.Array, route: Optional[jax.Array] = None) -> jax.Array:
    """``route`` [B] (task index per example, mtl_jax/routing.py): x [B, D] -> [B, O]
    through each example's own task's slice only."""
    d = x.shape[-1]
    init = nn.initializers.lecun_normal(in_axis=-2, out_axis=-1, batch_axis=(0,))
    kernel = self.param("kernel", init, (self.num_tasks, d, self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.num_tasks, self.features))
    if route is not None:
      if x.ndim != 2 or self.extra_axes:
        raise ValueError(f"StackedDense: routing takes shared per-example features [B, D], "
                         f"got {x.shape}")
      return jnp.einsum("bd,bdo->bo", x, kernel[route]) + bias[route]
    shared_ndim = 2 + self.extra_axes
    if not self.extra_axes and x.ndim == 2:  # the common cases, written out as before
      y = jnp.einsum("bd,tdo->tbo", x, kernel)
    elif not self.extra_axes and x.ndim == 3:
      y = jnp.einsum("tbd,tdo->tbo", x, kernel)
    elif x.ndim == shared_ndim:
      y = jnp.einsum("b...d,tdo->tb...o", x, kernel)
    elif x.ndim == shared_ndim + 1:
      if x.shape[0] != self.num_tasks:
        raise ValueError(f"StackedDense: per-task features {x.shape} must lead with the "
                         f"{self.num_tasks} tasks")
      y = jnp.einsum("tb...d,tdo->tb...o", x, kernel)
    else:
      axes = "B, " + "L, " * self.extra_axes
      raise ValueError(f"StackedDense (extra_axes={self.extra_axes}) expects [{axes}D] or "
                       f"[T, {axes}D] features, got {x.shape}")
    return y + bias.reshape((self.num_tasks,) + (1,) * (y.ndim - 2) + (self.features,))


class TaskHeads(nn.Module):
  """One stacked head (optional hidden layers, then the output layer) per group.

  Parameter paths: ``heads/<kind>_<n>/kernel`` for the output layer and
  ``heads/<kind>_<n>_hidden_<j>/kernel`` for hidden layers; row t of a group's
  tensors belongs to ``group.names[t]``. A group's kind sets the output size
  and how many position axes the features carry (token and ranking kinds
  take per-position features [B, L, D] and return [T_g, B, L, n]).
  """
  groups: Sequence[TaskGroup]
  hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, features: jax.Array,
               routes: Optional[Dict[str, jax.Array]] = None) -> Dict[str, jax.Array]:
    """``routes`` {group key: [B] task index}: that group's output is [B, n], each
    example through its own task's head (mtl_jax/routing.py); else [T_g, B, ..., n]."""
    out = {}
    for g in self.groups:
      kind = kinds.get(g.kind)
      route = None if routes is None else routes[g.key]
      h = features
      for j, width in enumerate(self.hidden):
        h = nn.relu(StackedDense(len(g.names), width, kind.output_axes,
                                 name=f"{g.key}_hidden_{j}")(h, route))
      out[g.key] = StackedDense(len(g.names), kind.head_outputs(g.num_outputs),
                                kind.output_axes, name=g.key)(h, route)
    return out


def outputs_by_task(groups: Sequence[TaskGroup], outputs: Dict[str, jax.Array]) -> Dict[str, jax.Array]:
  """Unstacks group outputs [T_g, B, ..., n] into {task: [B, ..., n]} (for eval and users)."""
  return {name: outputs[g.key][t] for g in groups for t, name in enumerate(g.names)}


def concat_batches(groups: Sequence[TaskGroup], chunks: Sequence[Dict[str, np.ndarray]],
                   n: int) -> Dict[str, np.ndarray]:
  """Joins per-batch group outputs on their batch axis and drops padding rows past ``n``.

  Outputs are [(replicas,) T_g, B, (positions,) n_out]; the batch axis is
  found from the end, so a leading replica axis and a kind's position axis
  both work.
  """
  out = {}
  for g in groups:
    axis = -(2 + kinds.get(g.kind).output_axes)
    joined = np.concatenate([c[g.key] for c in chunks], axis=axis)
    out[g.key] = np.take(joined, np.arange(n), axis=axis)
  return out
