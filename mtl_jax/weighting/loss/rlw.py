"""Random Loss Weighting (RLW; Lin et al., "Reasonable Effectiveness of Random Weighting",
TMLR 2022).

Each step draws z ~ N(0, I_T) and uses λ = softmax(z) (RLW with the normal
sampling distribution, one of those the paper studies). We return T·softmax(z) so that the weights sum
to T like `equal` (Σ_t L_t): RLW then differs from EW only in the random
direction, not in the effective learning rate. Stateless; `combine` needs `rng`.
"""

import jax

from mtl_jax.weighting.loss.base import LOSS_WEIGHTINGS, LossWeighting


@LOSS_WEIGHTINGS.register("rlw")
class RLW(LossWeighting):
  """Weights T·softmax(z), z ~ N(0, I), fresh per step from the `rng` given to `combine`."""

  def weights(self, state, rng):
    if rng is None:
      raise ValueError("rlw is random: pass a PRNG key as `rng` to combine")
    z = jax.random.normal(rng, (self.num_tasks,))
    return self.num_tasks * jax.nn.softmax(z)
