"""GradDrop (Chen et al., "Just Pick a Sign", NeurIPS 2020, Algorithm 1 lines 10-15).

Per coordinate, the positive-sign purity P = ½(1 + Σ_i J_i / Σ_i |J_i|) sets
the chance of keeping the positive entries (else the negative ones); one
uniform draw per coordinate from `rng`. Rows may leak through with
`leak[i]`. Same combination as torchjd.GradDrop (a sum, not a mean).
"""

import jax
import jax.numpy as jnp

from mtl_jax.reductions import leading_sum
from mtl_jax.weighting.base import AGGREGATORS, Aggregator, require_rng


def graddrop_from_uniform(jacobian: jax.Array, uniform: jax.Array, f=None, leak=None):
  """GradDrop with the per-coordinate uniform draws given ([P]); f maps purity (identity)."""
  t = jacobian.shape[0]
  total = leading_sum(jnp.abs(jacobian))  # a GEMV: see mtl_jax/reductions.py
  purity = 0.5 * (1.0 + leading_sum(jacobian) / jnp.where(total > 0, total, 1.0))
  fp = purity if f is None else f(purity)
  keep = ((fp > uniform) & (jacobian > 0)) | ((fp < uniform) & (jacobian < 0))
  leak = jnp.zeros((t,), jacobian.dtype) if leak is None else jnp.asarray(leak, jacobian.dtype)
  mask = leak[:, None] + (1.0 - leak[:, None]) * keep.astype(jacobian.dtype)
  return leading_sum(mask * jacobian)


@AGGREGATORS.register("graddrop")
class GradDrop(Aggregator):
  """Options: f (monotone map of the purity; identity), leak (T values in [0, 1]). Random."""

  def __init__(self, f=None, leak=None):
    self.f = f
    self.leak = None if leak is None else tuple(leak)

  def __call__(self, jacobian, rng=None):
    uniform = jax.random.uniform(require_rng(rng, "graddrop"), jacobian.shape[1:], jacobian.dtype)
    return graddrop_from_uniform(jacobian, uniform, self.f, self.leak)
