"""GradNorm (Chen, Badrinarayanan, Lee & Rabinovich, ICML 2018, Sec. 3 and Algorithm 1).

Loss weights w_i are tuned so that the gradient each weighted task puts on the
shared layer W (in practice the last shared layer) is balanced, scaled by how
far each task lags behind in training. With n_i = ||∇_W L_i|| (unweighted loss,
filled by the caller as `StepInfo.layer_grad_norms`):

    G_i = w_i n_i = ||∇_W w_i L_i||,   Ḡ = mean_i G_i,
    L̃_i = L_i(t) / L_i(0),            r_i = L̃_i / mean_j L̃_j,
    L_grad = Σ_i | G_i − [Ḡ · r_i^α] |,   the bracket held constant,

so ∂L_grad/∂w_i = sign(G_i − Ḡ r_i^α) · n_i. `update` takes one SGD (or Adam)
step on w with this method's `lr`, then renormalises to Σ_i w_i = T as in
Algorithm 1. Before renormalising it clips w_i ≥ `min_weight`, so a large step
cannot make a weight zero or negative (the paper does not say; a negative
weight would turn a loss into a reward); clipping first keeps Σ_i w_i = T
exact. L_i(0) are the losses seen by the first `update` call, recorded in the
state with a flag.

`combine` uses the current w as constants (the model sees w, never L_grad).
Default α = 1.5; the paper's synthetic toy uses α = 0.12 (lower α: weaker pull
towards equal training rates, closer to plain gradient-norm equalisation).
"""

import jax.numpy as jnp

from mtl_jax.weighting.loss.base import LOSS_WEIGHTINGS, LearnedLossWeighting, opt_step


@LOSS_WEIGHTINGS.register("gradnorm")
class GradNorm(LearnedLossWeighting):
  """Learned weights w (Σ w = T).

  Options: `layer_regex` (required), `alpha`, `lr`, `optimizer`, `min_weight`.
  """

  needs_layer_grad_norms = True
  learned = "weights"
  initial = 1.0

  def __init__(self, num_tasks: int, layer_regex: str = None, alpha: float = 1.5,
               lr: float = 0.025, optimizer: str = "sgd", min_weight: float = 1e-3):
    super().__init__(num_tasks, lr, optimizer)
    if not layer_regex:
      raise ValueError("gradnorm needs `layer_regex`, a full-match regex on '/'-joined parameter "
                       "paths selecting the last shared layer, e.g. 'trunk/block_3/Dense_0/kernel'")
    if not min_weight > 0:
      raise ValueError(f"gradnorm: min_weight must be positive, got {min_weight!r}")
    self.layer_regex = layer_regex
    self.alpha = float(alpha)
    self.min_weight = float(min_weight)

  def init(self):
    return {**super().init(), "initial_losses": jnp.ones((self.num_tasks,), jnp.float32),
            "has_initial": jnp.zeros((), jnp.float32)}

  def weights(self, state, rng):
    return state["weights"]

  def update(self, state, info):
    norms = jnp.asarray(self.require(info.layer_grad_norms, "layer_grad_norms"), jnp.float32)
    losses = jnp.asarray(info.losses, jnp.float32)
    tiny = jnp.finfo(jnp.float32).tiny
    l0 = jnp.where(state["has_initial"] > 0, state["initial_losses"], losses)
    w = state["weights"]
    g = w * norms
    ratio = losses / jnp.maximum(l0, tiny)
    r = ratio / jnp.maximum(jnp.mean(ratio), tiny)
    target = jnp.mean(g) * r ** self.alpha
    grad = jnp.sign(g - target) * norms
    w, slots = opt_step(self.optimizer, self.lr, state["opt"], w, grad)
    w = jnp.maximum(w, self.min_weight)
    w = self.num_tasks * w / jnp.sum(w)
    return {"weights": w, "initial_losses": l0, "has_initial": jnp.ones_like(state["has_initial"]),
            "opt": slots}
