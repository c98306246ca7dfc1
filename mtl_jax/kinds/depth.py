"""``depth``: one depth value per pixel (monocular depth estimation).

Labels float [B, H, W], > 0 where measured and 0 where the sensor has no
depth (the NYUv2 files of LibMTL and MTAN; their depth is [H, W, 1], which the
dataset readers squeeze). The head returns [B, H, W, 1]. Loss: L1 over the
valid pixels of the batch. ``abs_err`` = Σ|d̂ - d| / n and ``rel_err`` =
Σ|d̂ - d| / d / n over every valid pixel of the split: LibMTL's
``DepthMetric`` weights each batch's means by its valid pixels, which is this
per-pixel mean over the split (not a mean of per-image errors).
"""

import jax.numpy as jnp
import numpy as np

from mtl_jax.kinds._dense import DenseKind, raise_bad_pixels
from mtl_jax.kinds.base import register


@register("depth")
class Depth(DenseKind):
  default_metrics = ("loss", "abs_err", "rel_err")
  valid_metrics = ("loss", "abs_err", "rel_err")
  lower_is_better = frozenset({"loss", "abs_err", "rel_err"})

  def check_spec(self, spec):
    if spec.num_outputs != 1:
      raise ValueError(f"task {spec.name!r}: {spec.kind} predicts one value per pixel: "
                       f"num_outputs must be 1, got {spec.num_outputs}")

  def check_labels(self, spec, labels, mask):
    raise_bad_pixels(spec, labels, mask, ~(np.isfinite(labels) & (labels >= 0)),
                     "depths that are negative or not finite (0 marks a missing depth)")

  def valid_pixels(self, labels, xp=None):
    return labels != 0

  def pixel_loss(self, outputs, labels):
    return jnp.abs(outputs[..., 0] - labels.astype(outputs.dtype))

  def _errors(self, outputs, labels, mask):
    valid = self.numpy_valid(labels, mask)
    d = labels[valid].astype(np.float64)
    return np.abs(np.asarray(outputs)[..., 0][valid].astype(np.float64) - d), d

  def numpy_loss(self, spec, outputs, labels, mask=None):
    """|d̂ - d| of every valid pixel (flattened), float64."""
    return self._errors(outputs, labels, mask)[0]

  def chunk_sums(self, spec, outputs, labels, mask):
    err, d = self._errors(outputs, labels, mask)
    return {"abs_sum": err.sum(), "rel_sum": (err / d).sum(),
            "pixels": np.asarray(err.size, np.float64)}

  def pixel_metrics(self, spec, sums):
    abs_err = sums["abs_sum"] / sums["pixels"]
    return {"loss": abs_err, "abs_err": abs_err, "rel_err": sums["rel_sum"] / sums["pixels"]}
