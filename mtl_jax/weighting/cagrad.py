"""CAGrad (Liu et al., "Conflict-Averse Gradient Descent for MTL", NeurIPS 2021, Algorithm 1).

With G normalised by its trace, g0 = mean row and φ = c||g0||, find simplex
weights w minimising F(w) = g_wᵀ g0 + φ ||g_w|| (g_w = Jᵀw); the direction is
g0 + (φ / ||g_w||) g_w, and 0 when ||g_w|| < norm_eps (as torchjd.CAGrad).

Solver (fixed cost, no loop over tasks). With b = G1/T and μ = F(w*), the KKT
conditions say that v = φ w*/||g_w*|| solves the non-negative QP

    min_{v >= 0} ½vᵀGv + (b - μ1)ᵀv        and       vᵀGv = φ²,

and then w* = v/Σv and the direction's weights are simply 1/T + v. vᵀGv is
non-decreasing in μ (0 at μ = min b, >= φ² at μ = F(1/T) = (1+c)||g0||²), so μ
is found on a grid: 16 values of μ solved at once as the columns of one
`qp.nonneg_qp` (FISTA + active-set polish, robust to rank-deficient G), then 16
inside the bracket, then the exact root of the quadratic vᵀGv = φ² along the
segment between the two bracketing solutions (v is piecewise linear in μ: exact
once the bracket holds no change of support). A 1e-6 ridge keeps G positive
definite, as before.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype, normalize
from mtl_jax.weighting.qp import DEFAULT_ITERS, nonneg_qp

_RIDGE = 1e-6
_GRID = 16


@AGGREGATORS.register("cagrad")
class CAGrad(GramianWeighted):
  """Options: c (radius of the ball around g0, default 0.5), norm_eps, qp_iters (FISTA steps
  per grid round, 200)."""

  def __init__(self, c=0.5, norm_eps=1e-4, qp_iters=None):
    if c < 0:
      raise ValueError(f"c must be non-negative, got {c}")
    self.c, self.norm_eps, self.qp_iters = c, norm_eps, qp_iters

  def weights(self, gram, rng=None):
    gram = gram.astype(compute_dtype(gram.dtype))
    t = gram.shape[0]
    g = normalize(gram, self.norm_eps)
    b = g @ jnp.full((t,), 1.0 / t, g.dtype)
    phi = self.c * jnp.sqrt(jnp.clip(jnp.sum(b) / t, 0.0))  # c ||g0||
    q = g + _RIDGE * jnp.eye(t, dtype=g.dtype)
    iters = DEFAULT_ITERS if self.qp_iters is None else self.qp_iters
    excess = lambda v: jnp.sum(v * (q @ v), axis=0) - phi * phi  # increasing in μ

    def grid_round(lo, hi):
      mu = jnp.linspace(lo, hi, _GRID, dtype=g.dtype)
      v = nonneg_qp(q, b[:, None] - mu[None, :], iters=iters)
      f = excess(v)
      k = jnp.clip(jnp.sum(f < 0) - 1, 0, _GRID - 2)
      return mu, v, k

    hi = (1.0 + self.c) * jnp.sum(b) / t * 1.01 + jnp.finfo(g.dtype).tiny
    mu, v, k = grid_round(jnp.min(b), hi)
    mu, v, k = grid_round(mu[k], mu[k + 1])
    v_lo, v_hi = (jax.lax.dynamic_index_in_dim(v, i, 1, keepdims=False) for i in (k, k + 1))
    # Root of (v_lo + sΔ)ᵀq(v_lo + sΔ) = φ² for s in [0, 1].
    delta = v_hi - v_lo
    qa, qb, qc = delta @ q @ delta, v_lo @ q @ delta, v_lo @ q @ v_lo - phi * phi
    root = jnp.sqrt(jnp.maximum(qb * qb - qa * qc, 0.0))
    s = jnp.clip(jnp.where(qa > 0, (root - qb) / jnp.where(qa > 0, qa, 1.0), 0.5), 0.0, 1.0)
    v = jnp.maximum(v_lo + s * delta, 0.0)
    total = jnp.sum(v)
    w = v / jnp.where(total > 0, total, 1.0)
    gw = jnp.sqrt(jnp.clip(w @ g @ w, 0.0))
    ok = (gw >= self.norm_eps) & (total > 0)
    cagrad = jnp.where(ok, 1.0 / t + phi / jnp.where(ok, gw, 1.0) * w, 0.0)
    mean = jnp.where(jnp.trace(g) > 0, 1.0 / t, 0.0) * jnp.ones((t,), g.dtype)
    return jnp.where(phi > 0, cagrad, mean)  # c = 0 or g0 = 0: the mean (0 if G is ~0)
