"""Gradient aggregation on the T x P Jacobian of the shared parameters."""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.strategy import (LossProblem, WeightingStrategy, flatten_rows,
                                        per_task_grads, task_gradient_stats)


def _unflatten_row(row: jax.Array, like_tree, mask):
  """Inverse of ``flatten_rows`` for one row, zeros where mask is False."""
  out, offset = [], 0
  for x, m in zip(jax.tree.leaves(like_tree), jax.tree.leaves(mask)):
    if m:
      size = x[0].size
      out.append(row[offset:offset + size].reshape(x.shape[1:]))
      offset += size
    else:
      out.append(jnp.zeros(x.shape[1:], x.dtype))
  return jax.tree.unflatten(jax.tree.structure(like_tree), out)


class JacobianStrategy(WeightingStrategy):
  """One forward pass, a vmap over T cotangents of its VJP (no Python loop over tasks),
  the aggregator on the shared rows; task-specific parameters (heads) get the sum
  of the per-task gradients, i.e. each head its own task's gradient."""

  def __init__(self, aggregator, num_tasks: int, shared_mask):
    self.aggregator, self.num_tasks, self.shared_mask = aggregator, num_tasks, shared_mask

  def gradients(self, problem: LossProblem, params, wstate, rng):
    (wl, (per_task, reg)), vjp_fn = problem.vjp(params)
    per_task_g = per_task_grads(vjp_fn, self.num_tasks, wl.dtype, reg.dtype)
    jac = flatten_rows(per_task_g, self.shared_mask)
    shared = _unflatten_row(self.aggregator(jac, rng), per_task_g, self.shared_mask)
    summed = jax.tree.map(lambda g: g.sum(0), per_task_g)
    grads = jax.tree.map(lambda m, s, t: s if m else t, self.shared_mask, shared, summed)
    if problem.reg_grad is not None:
      grads = jax.tree.map(jnp.add, grads, problem.reg_grad(params))
    metrics = {"task_loss": per_task, "regularizer": reg, "loss": jnp.sum(wl) + reg}
    metrics.update(task_gradient_stats(jac))
    return grads, None, metrics
