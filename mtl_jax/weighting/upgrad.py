"""UPGrad (Quinton & Rey, "Jacobian Descent for Multi-Objective Optimization", 2024).

Each row g_i is projected onto the dual cone {x : Jx >= 0} of all rows and the
projections are combined with the preference weights (default 1/T). The
result never conflicts with any task and reduces to the mean when no pair of
rows conflicts. Same definition and QP conditioning as torchjd.UPGrad.

The T projections are T columns of one batched QP (`qp.nonneg_qp`): every
iteration is one T x T x T matmul, a fixed number of them.
"""

import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS
from mtl_jax.weighting.dualproj import DualConeProjection


@AGGREGATORS.register("upgrad")
class UPGrad(DualConeProjection):
  """Each row projected, then combined (options: see DualConeProjection)."""

  def weights(self, gram, rng=None):
    v = self.project(gram, jnp.diag)
    return jnp.sum(v, axis=1)  # column i: the weights of g_i's projection
