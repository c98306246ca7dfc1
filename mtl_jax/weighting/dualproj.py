"""DualProj: the mean (or preference-weighted) gradient projected onto the dual cone of the rows.

The A-GEM/GEM projection (Lopez-Paz & Ranzato 2017, Eq. 11) as in
torchjd.DualProj: min ||d - Jᵀu|| s.t. Jd >= 0, solved in its dual form by
`qp.nonneg_qp` (fixed-cost FISTA + CG polish).
"""

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype, pref_weights
from mtl_jax.weighting.qp import dual_cone_weights


class DualConeProjection(GramianWeighted):
  """Shared by DualProj and UPGrad: options and the projection onto the rows' dual cone.

  Options: pref_vector (1/T), norm_eps, reg_eps (torchjd's 1e-4), qp_iters (FISTA steps,
  200), polish_iters (CG steps per active-set round, 16).
  """

  def __init__(self, pref_vector=None, norm_eps=1e-4, reg_eps=1e-4, qp_iters=None,
               polish_iters=16):
    self.pref_vector = None if pref_vector is None else tuple(pref_vector)
    self.norm_eps, self.reg_eps, self.qp_iters = norm_eps, reg_eps, qp_iters
    self.polish_iters = polish_iters

  def project(self, gram, weights_of):
    """(projection weights of ``weights_of(pref)`` in float32+, pref); gram cast likewise."""
    gram = gram.astype(compute_dtype(gram.dtype))
    pref = pref_weights(self.pref_vector, gram.shape[0], gram.dtype)
    return dual_cone_weights(weights_of(pref), gram, norm_eps=self.norm_eps,
                             reg_eps=self.reg_eps, iters=self.qp_iters,
                             polish_iters=self.polish_iters)


@AGGREGATORS.register("dualproj")
class DualProj(DualConeProjection):
  """The preference-weighted mean, projected once (options: see DualConeProjection)."""

  def weights(self, gram, rng=None):
    return self.project(gram, lambda pref: pref)
