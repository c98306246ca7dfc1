"""Uncertainty weighting (UW; Kendall, Gal & Cipolla, CVPR 2018).

Each task has a learned homoscedastic noise σ_t, parameterised as the log-variance
s_t = log σ_t² (their Sec. 3.2, for numerical stability). We use

    total = Σ_t exp(-s_t) L_t + s_t,          s_t initialised to 0.

Kendall's Gaussian (regression) objective is 1/(2σ²) L + log σ = ½(exp(-s) L + s):
we drop the common factor ½ so that at s = 0 the total is exactly `equal`
(Σ_t L_t, weights 1). This doubles the gradients of the whole objective and
leaves the optimum where it was: ∂total/∂s_t = 1 − exp(-s_t) L_t = 0 at
s_t = log L_t, i.e. the weight exp(-s_t) tends to 1/L_t. (Their classification
form exp(-s) L + s/2 would settle at s = log 2L instead; we use one form for all
tasks, as most re-implementations do.)

s is learned by gradient of `total` (it is the one state entry `combine` does not
stop): the caller passes d total / d state as `StepInfo.state_grad`, and
`update` takes one SGD or Adam step on s with this method's own `lr`.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.loss.base import LOSS_WEIGHTINGS, LearnedLossWeighting, opt_step


@LOSS_WEIGHTINGS.register("uncertainty")
class Uncertainty(LearnedLossWeighting):
  """Learned log-variances s: weights exp(-s); options `lr`, `optimizer` ("adam" or "sgd")."""

  learned = "log_vars"

  def __init__(self, num_tasks: int, lr: float = 1e-2, optimizer: str = "adam"):
    super().__init__(num_tasks, lr, optimizer)

  def combine(self, state, losses, rng=None):
    losses = self.check_losses(losses)
    s = state["log_vars"].astype(losses.dtype)
    total = jnp.sum(jnp.exp(-s) * losses + s)
    return total, jax.lax.stop_gradient(jnp.exp(-s))

  def update(self, state, info):
    g = jnp.asarray(self.require(info.state_grad, "state_grad")["log_vars"], jnp.float32)
    s, slots = opt_step(self.optimizer, self.lr, state["opt"], state["log_vars"], g)
    return {"log_vars": s, "opt": slots}
