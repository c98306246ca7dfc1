"""Static weighting: fixed user-given weights, the hand-tuned baseline."""

import math

import jax.numpy as jnp

from mtl_jax.weighting.loss.base import LOSS_WEIGHTINGS, LossWeighting


@LOSS_WEIGHTINGS.register("static")
class Static(LossWeighting):
  """`weights=(w_1, ..., w_T)`, finite, non-negative; checked here so a bad config fails early."""

  def __init__(self, num_tasks: int, weights=None):
    super().__init__(num_tasks)
    if weights is None:
      raise ValueError("static loss weighting needs `weights`, one per task")
    weights = tuple(float(w) for w in weights)
    if len(weights) != self.num_tasks:
      raise ValueError(f"static: got {len(weights)} weights for {self.num_tasks} tasks")
    bad = [w for w in weights if not math.isfinite(w) or w < 0]
    if bad:
      raise ValueError(f"static: weights must be finite and non-negative, got {list(weights)}")
    self.weights_ = weights

  def weights(self, state, rng):
    return jnp.asarray(self.weights_, jnp.float32)
