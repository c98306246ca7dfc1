"""MGDA (Désidéri 2012) with the Frank-Wolfe solver of Sener & Koltun 2018, Algorithm 2.

Approximates the min-norm point of the convex hull of the rows. Same
iteration as torchjd.MGDA, including its stopping rule (step gamma < epsilon)
and max_iters, so the approximation error matches torchjd's too. Runs on the
raw (unnormalised) Gramian, so the output scales linearly with J.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype


@AGGREGATORS.register("mgda")
class MGDA(GramianWeighted):
  """Options: epsilon (stop when the Frank-Wolfe step < epsilon), max_iters."""

  def __init__(self, epsilon=1e-3, max_iters=100):
    if epsilon <= 0 or max_iters <= 0:
      raise ValueError("epsilon and max_iters must be positive")
    self.epsilon, self.max_iters = epsilon, max_iters

  def weights(self, gram, rng=None):
    gram = gram.astype(compute_dtype(gram.dtype))
    t = gram.shape[0]

    def step(_, state):
      alpha, done = state
      e = jax.nn.one_hot(jnp.argmin(gram @ alpha), t, dtype=gram.dtype)
      a, b, c = alpha @ (gram @ e), alpha @ (gram @ alpha), e @ (gram @ e)
      gamma = jnp.where(c <= a, 1.0, jnp.where(b <= a, 0.0, (b - a) / jnp.where(
          b + c - 2 * a == 0, 1.0, b + c - 2 * a)))
      new = (1 - gamma) * alpha + gamma * e
      return jnp.where(done, alpha, new), done | (gamma < self.epsilon)

    alpha0 = jnp.full((t,), 1.0 / t, gram.dtype)
    alpha, _ = jax.lax.fori_loop(0, self.max_iters, step, (alpha0, jnp.array(False)))
    return alpha
