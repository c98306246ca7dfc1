"""Equal weighting (EW): every weight 1, total = Σ_t L_t, the baseline for the others."""

import jax.numpy as jnp

from mtl_jax.weighting.loss.base import LOSS_WEIGHTINGS, LossWeighting


@LOSS_WEIGHTINGS.register("equal")
class Equal(LossWeighting):
  """Weights 1 (the sum, not the mean: the other methods keep Σ_t w_t = T on this scale)."""

  def weights(self, state, rng):
    return jnp.ones((self.num_tasks,), jnp.float32)
