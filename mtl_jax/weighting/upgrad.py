"""UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024).

Each row g_i is projected onto the dual cone {x : Jx >= 0} of all rows and the
projections are combined with the preference weights (default 1/T). The
result never conflicts with any task and reduces to the mean when no pair of
rows conflicts. Same definition and QP conditioning as torchjd.UPGrad.

The T projections are T columns of one batched QP (`qp.nonneg_qp`): every
iteration is one T x T x T matmul, a fixed number of them.
"""

import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype, pref_weights
from mtl_jax.weighting.qp import dual_cone_weights


@AGGREGATORS.register("upgrad")
class UPGrad(GramianWeighted):
  """Options: pref_vector (1/T), norm_eps, reg_eps (torchjd's 1e-4), qp_iters (FISTA steps,
  200), polish_iters (CG steps per active-set round, 16)."""

  def __init__(self, pref_vector=None, norm_eps=1e-4, reg_eps=1e-4, qp_iters=None,
               polish_iters=16):
    self.pref_vector = None if pref_vector is None else tuple(pref_vector)
    self.norm_eps, self.reg_eps, self.qp_iters = norm_eps, reg_eps, qp_iters
    self.polish_iters = polish_iters

  def weights(self, gram, rng=None):
    gram = gram.astype(compute_dtype(gram.dtype))
    pref = pref_weights(self.pref_vector, gram.shape[0], gram.dtype)
    v = dual_cone_weights(jnp.diag(pref), gram, norm_eps=self.norm_eps, reg_eps=self.reg_eps,
                          iters=self.qp_iters, polish_iters=self.polish_iters)
    return jnp.sum(v, axis=1)  # column i: the weights of g_i's projection
