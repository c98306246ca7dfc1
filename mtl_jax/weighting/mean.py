"""Fixed weights: mean, sum and a constant weight vector (the baselines)."""

import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, pref_weights


@AGGREGATORS.register("mean")
class Mean(GramianWeighted):
  """Equal weighting 1/T: plain multi-task gradient descent on the mean loss."""

  def weights(self, gram, rng=None):
    return pref_weights(None, gram.shape[0], gram.dtype)


@AGGREGATORS.register("sum")
class Sum(GramianWeighted):
  """All weights 1: gradient of the summed loss."""

  def weights(self, gram, rng=None):
    return jnp.ones((gram.shape[0],), gram.dtype)


@AGGREGATORS.register("constant")
class Constant(GramianWeighted):
  """Fixed weights given as `weights=(w_1, ..., w_T)`."""

  def __init__(self, weights):
    self.weights_ = tuple(weights)

  def weights(self, gram, rng=None):
    return pref_weights(self.weights_, gram.shape[0], gram.dtype)
