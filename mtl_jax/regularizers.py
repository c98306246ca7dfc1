"""Parameter regularizers added to the training loss, selected by config.

``config.regularizers = [dict(name="l2_to_mean", weight=1e-2, select="trunk/.*")]``
Each entry is a registered function ``fn(params, select=regex, **options) ->
scalar``; the loss adds ``weight * fn(...)``. ``select`` is a full-match
regex on ``/``-joined parameter paths, like param_groups.
"""

from typing import Any, List

import jax
import jax.numpy as jnp

from mtl_jax import paths
from mtl_jax.reductions import leading_mean
from mtl_jax.registry import Registry

REGULARIZERS = Registry("regularizer")


def select_leaves(params, select: str) -> List[jax.Array]:
  """The leaves whose path fully matches ``select``; an empty selection is an error."""
  flat = paths.flatten(params)
  # Sorted paths: '/' sorts before every name character, so this is the tuple order.
  return [flat[p] for p in sorted(paths.require_match(params, select, "regularizer select"))]


@REGULARIZERS.register("l2")
def l2(params, select: str = ".*") -> jax.Array:
  """Sum of squares of the selected parameters (weight decay as a loss term)."""
  return sum(jnp.sum(jnp.square(x)) for x in select_leaves(params, select))


def build_regularizer(configs) -> Any:
  """Returns ``fn(params) -> scalar`` summing ``weight * reg(params)`` over entries."""
  entries = []
  for c in configs or ():
    c = dict(c)
    name = c.pop("name")
    weight = float(c.pop("weight"))
    entries.append((REGULARIZERS.get(name), weight, c))

  def total(params) -> jax.Array:
    return sum((w * fn(params, **opts) for fn, w, opts in entries), jnp.zeros((), jnp.float32))

  return total if entries else None


def _stacked_leaves(params, select: str, name: str) -> List[jax.Array]:
  leaves = select_leaves(params, select)
  scalars = [i for i, x in enumerate(leaves) if x.ndim == 0]
  if scalars:
    raise ValueError(f"{name}: select {select!r} matches scalar parameters, which have no "
                     "leading task axis; select stacked leaves such as 'columns/.*'")
  return leaves


@jax.custom_vjp
def _spread(x: jax.Array) -> jax.Array:
  """sum_t ||x_t - mean_t x||^2 over the leading axis."""
  return jnp.sum(jnp.square(x - leading_mean(x)))


def _spread_fwd(x):
  return _spread(x), x


def _spread_bwd(x, g):
  # The analytic gradient 2 (x_t - mean): autodiff would also carry the mean's
  # own term, -2/T sum_s (x_s - mean), which is exactly zero, through a second
  # reduction and broadcast. Recomputing from x keeps no residual alive.
  return (2.0 * g * (x - leading_mean(x)),)


_spread.defvjp(_spread_fwd, _spread_bwd)


@REGULARIZERS.register("l2_to_mean")
def l2_to_mean(params, select: str = "columns/.*") -> jax.Array:
  """Soft sharing: sum over selected leaves of sum_t ||theta_t - mean_t theta||^2.

  Each selected leaf is stacked with the task axis first ([T, ...], as the
  soft/single_task ``columns``). This O(T) form equals the pairwise
  sum_{s<t} ||theta_s - theta_t||^2 divided by T, without T^2 differences.
  Its gradient is computed analytically, 2 (theta_t - mean), in one fused
  elementwise pass; the mean over tasks is a GEMV (mtl_jax/reductions.py:
  XLA:CPU's own reduction of that axis made soft sharing 1.5x slower).
  """
  return sum(_spread(x) for x in _stacked_leaves(params, select, "l2_to_mean"))


@REGULARIZERS.register("trace_norm")
def trace_norm(params, select: str = "columns/.*") -> jax.Array:
  """Sum over selected leaves of the nuclear norm of the leaf reshaped to [T, -1].

  Row t is task t's whole tensor flattened (kernel [T, D_in, D_out] ->
  [T, D_in*D_out]), so the norm is small when the task columns span few
  directions (Yang & Hospedales, 2017). Its gradient is U V^T of the SVD.
  """
  return sum(jnp.sum(jnp.linalg.svd(x.reshape(x.shape[0], -1), compute_uv=False))
             for x in _stacked_leaves(params, select, "trace_norm"))
