"""Gramian-weighted aggregation without storing the T x P Jacobian (the default path).

For an aggregator whose weights depend only on G = J Jᵀ (``GramianWeighted``),
the update of the shared parameters is wᵀJ = ∇(Σ_t w_t L_t). So:

1. per-task gradients of the shared parameters from one forward pass and a
   vmap over T cotangents of its VJP, each leaf's [T, p] block contracted to
   [T, T] as soon as it exists (XLA frees the block; nothing of size T x P
   is kept or concatenated);
2. w = aggregator.weights(G);
3. one backward pass with cotangent w for the shared parameters, and one
   with cotangent 1 for the task-specific ones.

Heads' convention, identical on every aggregator path: each task-specific
parameter gets the plain (static-weighted) gradient of its own task, i.e.
the gradient of Σ_t L_t, not w_t times it. The two backward passes are
separate calls whose unused halves XLA removes, so the trunk is
differentiated once more and the heads once more, nothing else. The
Gramian is accumulated in float32 at least (float64 stays float64), so a
bfloat16 forward still gets float32 weights.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import compute_dtype, gramian
from mtl_jax.weighting.strategy import LossProblem, WeightingStrategy, per_task_grads


def accumulate_gramian(per_task_tree, mask) -> jax.Array:
  """Σ over masked leaves of J_leaf J_leafᵀ, leaf by leaf ([T, ...] leaves -> [T, T])."""
  gram = None
  for g, m in zip(jax.tree.leaves(per_task_tree), jax.tree.leaves(mask)):
    if not m:
      continue
    g = g.reshape(g.shape[0], -1)
    block = gramian(g.astype(compute_dtype(g.dtype)))
    gram = block if gram is None else gram + block
  return gram


def gram_stats(gram: jax.Array):
  """Per-task gradient norms [T] and pairwise cosines [T, T] from the Gramian."""
  norms = jnp.sqrt(jnp.maximum(jnp.diag(gram), 0.0))
  cos = gram / jnp.maximum(norms[:, None] * norms[None, :], 1e-12)
  return {"task_grad_norm": norms, "task_grad_cosine": cos}


def select(mask, if_true, if_false):
  return jax.tree.map(lambda m, a, b: a if m else b, mask, if_true, if_false)


class GramianStrategy(WeightingStrategy):

  def __init__(self, aggregator, num_tasks: int, shared_mask):
    self.aggregator, self.num_tasks, self.shared_mask = aggregator, num_tasks, shared_mask

  def gradients(self, problem: LossProblem, params, wstate, rng):
    (wl, (per_task, reg)), vjp_fn = problem.vjp(params)
    gram = accumulate_gramian(per_task_grads(vjp_fn, self.num_tasks, wl.dtype, reg.dtype),
                              self.shared_mask)
    weights = jax.lax.stop_gradient(self.aggregator.weights(gram, rng))
    one = jnp.ones((), reg.dtype)
    shared = vjp_fn((weights.astype(wl.dtype), one))[0]
    own = vjp_fn((jnp.ones_like(wl), one))[0]
    metrics = {"task_loss": per_task, "regularizer": reg, "task_weight": weights,
               "loss": jnp.sum(wl) + reg}
    metrics.update(gram_stats(gram))
    return select(self.shared_mask, shared, own), None, metrics
