"""UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024).

Each row g_i is projected onto the dual cone {x : Jx >= 0} of all rows and the
projections are combined with the preference weights (default 1/T). The
result never conflicts with any task and reduces to the mean when no pair of
rows conflicts. Same definition and QP conditioning as torchjd.UPGrad.
"""

import jax
import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, pref_weights
from mtl_jax.weighting.qp import dual_cone_weights


@AGGREGATORS.register("upgrad")
class UPGrad(GramianWeighted):
  """Options: pref_vector (1/T), norm_eps, reg_eps (torchjd's 1e-4), qp_iters (3T+8)."""

  def __init__(self, pref_vector=None, norm_eps=1e-4, reg_eps=1e-4, qp_iters=None):
    self.pref_vector = None if pref_vector is None else tuple(pref_vector)
    self.norm_eps, self.reg_eps, self.qp_iters = norm_eps, reg_eps, qp_iters

  def weights(self, gram, rng=None):
    pref = pref_weights(self.pref_vector, gram.shape[0], gram.dtype)
    project = lambda u: dual_cone_weights(u, gram, norm_eps=self.norm_eps, reg_eps=self.reg_eps,
                                          iters=self.qp_iters)
    return jnp.sum(jax.vmap(project)(jnp.diag(pref)), axis=0)
