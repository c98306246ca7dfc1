"""Loss weighting as a train-step strategy: one backward pass of ``combine(state, L)``."""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.loss.base import StepInfo
from mtl_jax.weighting.gramian_strategy import accumulate_gramian, gram_stats
from mtl_jax.weighting.strategy import LossProblem, WeightingStrategy, flatten_rows, per_task_grads


class LossWeightingStrategy(WeightingStrategy):
  """d total / d losses from the method, then one VJP for the parameters.

  Per-task gradients are computed only when something needs them: gradient
  logging (``log_mask``, the shared parameters) or a method that reads
  per-task gradient norms of one layer (GradNorm, ``layer_mask``).
  """

  def __init__(self, method, num_tasks: int, log_mask=None, layer_mask=None):
    self.method, self.num_tasks = method, num_tasks
    self.log_mask, self.layer_mask = log_mask, layer_mask

  def init_state(self):
    return self.method.init()

  def gradients(self, problem: LossProblem, params, wstate, rng):
    (wl, (per_task, reg)), vjp_fn = problem.vjp(params)

    def f(losses, state):
      return self.method.combine(state, losses, rng)
    (total, weights), (g_losses, g_state) = jax.value_and_grad(
        f, argnums=(0, 1), has_aux=True)(wl, wstate)
    grads = vjp_fn((g_losses.astype(wl.dtype), jnp.ones((), reg.dtype)))[0]
    metrics = {"task_loss": per_task, "regularizer": reg, "loss": total + reg,
               "task_weight": weights}
    layer_norms = None
    if self.log_mask is not None or self.layer_mask is not None:
      per_task_g = per_task_grads(vjp_fn, self.num_tasks, wl.dtype, reg.dtype)
      if self.log_mask is not None:
        metrics.update(gram_stats(accumulate_gramian(per_task_g, self.log_mask)))
      if self.layer_mask is not None:
        # Unweighted per-task losses: divide out the static weights (GradNorm's definition).
        w = problem.static_weights
        layer_norms = (jnp.linalg.norm(flatten_rows(per_task_g, self.layer_mask), axis=1)
                       / jnp.where(w > 0, w, 1.0))
    carry = dict(g_state=g_state, layer_grad_norms=layer_norms, losses=jax.lax.stop_gradient(wl))
    return grads, carry, metrics

  def update_state(self, problem: LossProblem, wstate, carry, new_params, step, rng):
    new_losses = None
    if self.method.needs_new_losses:  # the method's own declared need
      new_losses = jax.lax.stop_gradient(problem.weighted(new_params)[0])
    return self.method.update(wstate, StepInfo(
        step=step, losses=carry["losses"], state_grad=carry["g_state"],
        layer_grad_norms=carry["layer_grad_norms"], new_losses=new_losses, rng=rng))
