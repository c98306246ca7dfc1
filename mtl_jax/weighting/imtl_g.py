"""IMTL-G (Liu et al., "Towards Impartial Multi-task Learning", ICLR 2021).

Finds the direction whose projection on every unit task gradient is equal:
w ∝ G⁺ sqrt(diag G), normalised to sum 1. The pseudo-inverse is the
generalisation of torchjd.IMTLG (Quinton & Rey 2024) that accepts linearly
dependent rows; weights are 0 when they sum to ~0.
"""

import jax.numpy as jnp

from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted, compute_dtype


@AGGREGATORS.register("imtl_g")
class IMTLG(GramianWeighted):

  def weights(self, gram, rng=None):
    gram = gram.astype(compute_dtype(gram.dtype))
    rtol = gram.shape[0] * jnp.finfo(gram.dtype).eps  # torch.linalg.pinv's default cutoff
    v = jnp.linalg.pinv(gram, rtol=rtol, hermitian=True) @ jnp.sqrt(
        jnp.clip(jnp.diagonal(gram), 0.0))
    s = jnp.sum(v)
    return jnp.where(jnp.abs(s) < 1e-12, 0.0, v / jnp.where(s == 0, 1.0, s))
