"""FAMO, Fast Adaptive Multitask Optimization (B. Liu, Feng, Stone & Q. Liu, NeurIPS 2023, Alg. 1).

Task logits ξ (init 0) give z = softmax(ξ). The model minimises the weighted
log-loss, normalised so the applied weights sum to 1:

    total = c Σ_t z_t log(L_t + ε),   c = (Σ_t z_t / (L_t + ε))^{-1}  (held constant),

whose gradient is Σ_t w_t ∇L_t with w_t = c z_t / (L_t + ε) (the `weights`
returned; Σ_t w_t = 1, so the update is on the scale of a mean loss, not of
`equal`'s sum: tune the learning rate accordingly). After the model step, with
the losses on the same batch before (L) and after (L') it,

    δ_t = log(L_t + ε) − log(L'_t + ε),   ξ ← ξ − β (J_zᵀ δ + γ ξ),   J_zᵀ δ = z ⊙ (δ − zᵀδ),

which lowers the weight of tasks whose loss fell most. The paper's update is
plain gradient descent on ξ; the official code (Cranial-XIX/FAMO) instead feeds
J_zᵀδ to Adam with weight decay γ (L2 added to the gradient). Both are here:
`optimizer="adam"` (default, as the official code, lr β = 0.025, γ = 0.01) or
"sgd". The official code also clips the shared gradient norm to 1 (the caller's
optimizer's job) and supports subtracting known minimum losses (not here: L ≥ 0
assumed, L → 0 is handled by ε). Losses must be non-negative for the logs.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.loss.base import LOSS_WEIGHTINGS, LearnedLossWeighting, opt_step


@LOSS_WEIGHTINGS.register("famo")
class FAMO(LearnedLossWeighting):
  """Logits ξ updated from the log-loss decrease; options `lr`, `gamma`, `eps`, `optimizer`."""

  needs_new_losses = True
  learned = "logits"

  def __init__(self, num_tasks: int, lr: float = 0.025, gamma: float = 0.01, eps: float = 1e-8,
               optimizer: str = "adam"):
    super().__init__(num_tasks, lr, optimizer)
    if not eps > 0:
      raise ValueError(f"famo: eps must be positive, got {eps!r}")
    self.gamma = float(gamma)
    self.eps = float(eps)

  def combine(self, state, losses, rng=None):
    losses = self.check_losses(losses)
    z = jax.lax.stop_gradient(jax.nn.softmax(state["logits"])).astype(losses.dtype)
    d = losses + self.eps
    c = 1.0 / jnp.sum(z / jax.lax.stop_gradient(d))
    total = c * jnp.sum(z * jnp.log(d))
    return total, jax.lax.stop_gradient(c * z / d)

  def update(self, state, info):
    new = jnp.asarray(self.require(info.new_losses, "new_losses"), jnp.float32)
    old = jnp.asarray(info.losses, jnp.float32)
    delta = jnp.log(old + self.eps) - jnp.log(new + self.eps)
    xi = state["logits"]
    z = jax.nn.softmax(xi)
    grad = z * (delta - jnp.dot(z, delta)) + self.gamma * xi
    xi, slots = opt_step(self.optimizer, self.lr, state["opt"], xi, grad)
    return {"logits": xi, "opt": slots}
