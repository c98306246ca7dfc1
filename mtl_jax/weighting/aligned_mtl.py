"""Aligned-MTL (Senushkin et al., "Independent Component Alignment for MTL", CVPR 2023).

Rescales the gradient system so its condition number is 1: with G = V Λ Vᵀ
(rank r), B = sqrt(scale) V_r Λ_r^{-1/2} V_rᵀ and the weights are B @ pref.
`scale_mode` picks the smallest ("min", torchjd's default), the lower-median
("median") or the mean ("rmse") kept eigenvalue. Rank uses torchjd's
tolerance max(λ)·T·eps(dtype); masks keep shapes static.
"""

import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype, pref_weights


@AGGREGATORS.register("aligned_mtl")
class AlignedMTL(GramianWeighted):
  """Options: pref_vector (default 1/T), scale_mode in {"min", "median", "rmse"}."""

  def __init__(self, pref_vector=None, scale_mode="min"):
    if scale_mode not in ("min", "median", "rmse"):
      raise ValueError(f"scale_mode={scale_mode!r}; expected 'min', 'median' or 'rmse'")
    self.pref_vector = None if pref_vector is None else tuple(pref_vector)
    self.scale_mode = scale_mode

  def weights(self, gram, rng=None):
    gram = gram.astype(compute_dtype(gram.dtype))
    t = gram.shape[0]
    lam, v = jnp.linalg.eigh(gram)
    lam, v = lam[::-1], v[:, ::-1]  # descending
    keep = lam > jnp.max(lam) * t * jnp.finfo(gram.dtype).eps
    rank = jnp.sum(keep)
    kept = jnp.where(keep, lam, 0.0)
    if self.scale_mode == "min":
      scale = jnp.min(jnp.where(keep, lam, jnp.inf))
    elif self.scale_mode == "median":  # torch.median: lower median of the kept values
      scale = lam[jnp.maximum(rank - 1 - (rank - 1) // 2, 0)]
    else:
      scale = jnp.sum(kept) / jnp.maximum(rank, 1)
    inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, lam, 1.0)), 0.0)
    b = jnp.sqrt(jnp.where(rank > 0, scale, 1.0)) * (v * inv_sqrt) @ v.T
    b = jnp.where(rank > 0, b, jnp.eye(t, dtype=gram.dtype))
    return b @ pref_weights(self.pref_vector, t, gram.dtype)
