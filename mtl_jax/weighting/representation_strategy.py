"""MGDA-UB style: aggregator weights from the Gramian of the representation Jacobian."""

import jax
import jax.numpy as jnp

from mtl_jax.models.sharing import SHARED_FEATURES, TASK_FEATURES
from mtl_jax.weighting.gramian_strategy import accumulate_gramian, gram_stats
from mtl_jax.weighting.strategy import LossProblem, WeightingStrategy


class RepresentationStrategy(WeightingStrategy):
  """The Jacobian w.r.t. the shared representation z (exposed by the model through
  ``self.perturb(SHARED_FEATURES, ...)``) is only [T, batch x D] and needs the
  backward through the heads only; the aggregator's weights on its Gramian then
  weight one ordinary backward pass."""

  def __init__(self, aggregator, num_tasks: int):
    self.aggregator, self.num_tasks = aggregator, num_tasks

  def gradients(self, problem: LossProblem, params, wstate, rng):
    (wl, (per_task, reg)), vjp_fn = problem.vjp(params)
    zero = problem.zero_features() if problem.zero_features else None
    if zero is None:
      raise ValueError("mode='representation' needs the model to expose its shared features "
                       "(self.perturb(SHARED_FEATURES, ...)); this sharing scheme does not")
    # Params are closed over, so the backward passes stop at the features and never
    # enter the trunk.
    if TASK_FEATURES in zero:
      # Per-task copies of the features, copy t read by head t only: one backward pass
      # of the summed losses gives row t = d (w_t L_t) / d features for every t.
      z_jac = jax.grad(lambda e: jnp.sum(problem.weighted(
          params, {**zero, TASK_FEATURES: e})[0]))(zero[TASK_FEATURES])
    else:  # T backward passes through the heads, vmapped
      z_losses, z_vjp = jax.vjp(lambda z: problem.weighted(params, {SHARED_FEATURES: z})[0],
                                zero[SHARED_FEATURES])
      eye = jnp.eye(self.num_tasks, dtype=z_losses.dtype)
      z_jac = jax.vmap(lambda c: z_vjp(c)[0])(eye)
    gram = accumulate_gramian(z_jac, True)
    weights = jax.lax.stop_gradient(self.aggregator.weights(gram, rng))
    grads = vjp_fn((weights.astype(wl.dtype), jnp.ones((), reg.dtype)))[0]
    metrics = {"task_loss": per_task, "regularizer": reg, "task_weight": weights,
               "loss": jnp.sum(weights * wl) + reg}
    metrics.update(gram_stats(gram))
    return grads, None, metrics
