"""CAGrad (Liu et al., "Conflict-Averse Gradient Descent for MTL", NeurIPS 2021, Algorithm 1).

With G normalised by its trace, g0 = mean row and φ = c||g0||, find simplex
weights w minimising g_wᵀ g0 + φ ||g_w|| (g_w = Jᵀw); the direction is
g0 + (φ / ||g_w||) g_w, and 0 when ||g_w|| < norm_eps (as torchjd.CAGrad).

Solver: writing φ||g|| = min_τ φ(||g||²/2τ + τ/2), the inner problem at fixed
τ is a simplex QP (`active_set_qp`, with ridge 1e-6·I so rank-deficient G
stays solvable), and the optimal τ is the root of ||g_w(τ)|| = τ, found by
32 bisection steps on log τ in [1e-6, 1] (||g_w|| <= 1 after normalising).
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, normalize
from mtl_jax.weighting.qp import active_set_qp

_RIDGE = 1e-6
_BISECTIONS = 32


@AGGREGATORS.register("cagrad")
class CAGrad(GramianWeighted):
  """Options: c (radius of the ball around g0, default 0.5), norm_eps, bisections, qp_iters."""

  def __init__(self, c=0.5, norm_eps=1e-4, bisections=_BISECTIONS, qp_iters=None):
    if c < 0:
      raise ValueError(f"c must be non-negative, got {c}")
    self.c, self.norm_eps, self.bisections, self.qp_iters = c, norm_eps, bisections, qp_iters

  def weights(self, gram, rng=None):
    t = gram.shape[0]
    g = normalize(gram, self.norm_eps)
    b = g @ jnp.full((t,), 1.0 / t, g.dtype)
    phi = self.c * jnp.sqrt(jnp.clip(jnp.sum(b) / t, 0.0))  # c ||g0||
    q = g + _RIDGE * jnp.eye(t, dtype=g.dtype)
    inner = lambda tau: active_set_qp(q, b * tau / jnp.maximum(phi, 1e-30), simplex=True,
                                      iters=self.qp_iters)
    norm_of = lambda w: jnp.sqrt(jnp.clip(w @ g @ w, 0.0))

    def bisect(_, bounds):
      lo, hi = bounds
      mid = 0.5 * (lo + hi)
      too_small = norm_of(inner(jnp.exp(mid))) > jnp.exp(mid)
      return jnp.where(too_small, mid, lo), jnp.where(too_small, hi, mid)

    lo, hi = jax.lax.fori_loop(0, self.bisections, bisect,
                               (jnp.log(jnp.asarray(1e-6, g.dtype)), jnp.zeros((), g.dtype)))
    w = inner(jnp.exp(0.5 * (lo + hi)))
    gw = norm_of(w)
    ok = gw >= self.norm_eps
    return jnp.where(ok, 1.0 / t + phi / jnp.where(ok, gw, 1.0) * w, 0.0)
