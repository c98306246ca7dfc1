"""Random weighting (Lin et al., "Reasonable Effectiveness of Random Weighting", TMLR 2022, Alg. 2).

Weights softmax(z), z ~ N(0, I), fresh at each call: a litmus test baseline.
"""

import jax

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, require_rng


@AGGREGATORS.register("random")
class RandomWeighting(GramianWeighted):
  """Random: needs `rng`."""

  def weights(self, gram, rng=None):
    z = jax.random.normal(require_rng(rng, "random"), (gram.shape[0],), gram.dtype)
    return jax.nn.softmax(z)
