"""Gradient aggregation on the stored T x P Jacobian of the shared parameters.

The path for aggregators that need J itself (GradDrop, random projections)
and, with ``mode="jacobian"``, an option for the others. Heads follow the
convention of the Gramian path (mtl_jax/weighting/gramian_strategy.py): each
gets its own task's plain gradient, from one backward pass with cotangent 1
(no per-task VJP over the heads).
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import GramianWeighted, compute_dtype, gramian
from mtl_jax.weighting.gramian_strategy import gram_stats, select
from mtl_jax.weighting.strategy import LossProblem, WeightingStrategy, flatten_rows, per_task_grads


def unflatten_row(row: jax.Array, like_tree, mask):
  """Inverse of ``flatten_rows`` for one row, zeros where mask is False."""
  out, offset = [], 0
  for x, m in zip(jax.tree.leaves(like_tree), jax.tree.leaves(mask)):
    if m:
      size = x[0].size
      out.append(row[offset:offset + size].reshape(x.shape[1:]).astype(x.dtype))
      offset += size
    else:
      out.append(jnp.zeros(x.shape[1:], x.dtype))
  return jax.tree.unflatten(jax.tree.structure(like_tree), out)


def effective_weights(gram: jax.Array, jac: jax.Array, direction: jax.Array) -> jax.Array:
  """w with wᵀJ closest to ``direction`` (least squares): what a non-Gramian method weighted."""
  return jnp.linalg.pinv(gram, hermitian=True) @ (jac @ direction)


class JacobianStrategy(WeightingStrategy):
  """One forward pass, a vmap over T cotangents of its VJP (no Python loop over tasks),
  the aggregator on the [T, P] rows of the shared parameters."""

  def __init__(self, aggregator, num_tasks: int, shared_mask):
    self.aggregator, self.num_tasks, self.shared_mask = aggregator, num_tasks, shared_mask

  def gradients(self, problem: LossProblem, params, wstate, rng):
    (wl, (per_task, reg)), vjp_fn = problem.vjp(params)
    per_task_g = per_task_grads(vjp_fn, self.num_tasks, wl.dtype, reg.dtype)
    jac = flatten_rows(per_task_g, self.shared_mask)
    jac = jac.astype(compute_dtype(jac.dtype))  # weights and the direction in float32 at least
    gram = gramian(jac)
    if isinstance(self.aggregator, GramianWeighted):
      weights = self.aggregator.weights(gram, rng)
      direction = jnp.matmul(weights.astype(jac.dtype), jac, precision=jax.lax.Precision.HIGHEST)
    else:
      direction = self.aggregator(jac, rng)
      weights = effective_weights(gram, jac, direction)
    shared = unflatten_row(direction, per_task_g, self.shared_mask)
    own = vjp_fn((jnp.ones_like(wl), jnp.ones((), reg.dtype)))[0]
    if problem.reg_grad is not None:
      shared = jax.tree.map(jnp.add, shared, problem.reg_grad(params))
    metrics = {"task_loss": per_task, "regularizer": reg, "loss": jnp.sum(wl) + reg,
               "task_weight": jax.lax.stop_gradient(weights)}
    metrics.update(gram_stats(gram))
    return select(self.shared_mask, shared, own), None, metrics
