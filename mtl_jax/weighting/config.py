"""ConFIG (Liu et al., "ConFIG: Towards Conflict-free Training of PINNs", 2024, Eq. 2).

Direction: the unit vector whose cosine with every unit row is equal
(pinv of the normalised rows applied to the preference, default all ones),
scaled by the sum of the rows' projections on it. As torchjd.ConFIG, computed
here through the Gramian: pinv(U) = Uᵀ (U Uᵀ)⁺. The cutoff T·eps then applies to
squared singular values, so float32 resolves singular values of U down to
~1e-3 σ_max (torchjd's SVD: ~1e-6); the two differ only for nearly dependent rows.
"""

import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted


@AGGREGATORS.register("config")
class ConFIG(GramianWeighted):
  """Options: pref_vector (default all ones)."""

  def __init__(self, pref_vector=None):
    self.pref_vector = None if pref_vector is None else tuple(pref_vector)

  def weights(self, gram, rng=None):
    t = gram.shape[0]
    pref = jnp.ones((t,), gram.dtype) if self.pref_vector is None else jnp.asarray(
        self.pref_vector, gram.dtype)
    norms = jnp.sqrt(jnp.clip(jnp.diagonal(gram), 0.0))
    inv = jnp.where(norms > 0, 1.0 / jnp.where(norms > 0, norms, 1.0), 0.0)
    units = gram * inv[:, None] * inv[None, :]
    rtol = t * jnp.finfo(gram.dtype).eps  # on eigenvalues of U Uᵀ, i.e. squared singular values
    c = inv * (jnp.linalg.pinv(units, rtol=rtol, hermitian=True) @ pref)
    best_sq = c @ gram @ c  # ||J^T c||^2; J^T c is the best direction
    norm = jnp.maximum(jnp.sqrt(jnp.clip(best_sq, 0.0)), 1e-12)
    length = jnp.sum(gram @ c) / norm
    return length * c / norm
