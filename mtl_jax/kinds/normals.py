"""``normals``: a unit surface normal per pixel.

Labels float [B, H, W, 3], (0, 0, 0) where there is no ground truth (NYUv2's
files); the head returns [B, H, W, 3], normalised here (not by the model).
Loss: 1 - cos(n̂, n) averaged over the valid pixels of the batch (LibMTL's and
MTAN's dot-product loss). Labels are normalised too, which changes nothing on
NYUv2's unit normals and keeps the angle defined on interpolated ones.

Metrics over every valid pixel of the split (LibMTL's ``NormalMetric``):
``mean_angle`` and ``median_angle`` (degrees) and ``within_11_25``,
``within_22_5``, ``within_30`` (share of pixels with error strictly below the
threshold, in [0, 1]). Mean and shares are exact sums; the median is read
from a histogram of ``MEDIAN_BIN`` degrees summed over the split, with linear
interpolation inside the bin, so it is within one bin (0.001°) of
``np.median`` over all pixels while evaluation keeps no outputs.

Valid pixels are those whose label is not the zero vector; LibMTL tests
``sum(n) != 0``, which differs only on normals whose components sum to 0.
"""

import jax.numpy as jnp
import numpy as np

from mtl_jax.kinds._dense import DenseKind, raise_bad_pixels
from mtl_jax.kinds.base import register

MEDIAN_BIN = 1e-3  # degrees
_NUM_BINS = int(round(180.0 / MEDIAN_BIN)) + 1  # the last bin holds exactly 180°
THRESHOLDS = {"within_11_25": 11.25, "within_22_5": 22.5, "within_30": 30.0}


def unit(x, xp=jnp, eps=1e-12):
  """x / |x| over the last axis; 0 stays 0 (no NaN, no NaN gradient)."""
  return x * (1.0 / xp.sqrt(xp.maximum((x * x).sum(-1, keepdims=True), eps)))


def histogram_median(counts: np.ndarray, width: float) -> float:
  """np.median of values binned in ``counts`` (bin b = [b·w, (b+1)·w)), within one bin.

  The value of rank r (0-based) is placed inside its bin as if the bin's
  values were spread evenly; n even averages ranks n/2 - 1 and n/2 like np.median.
  """
  n = int(counts.sum())
  if n == 0:
    return float("nan")
  cum = np.cumsum(counts)
  def at(rank):
    b = int(np.searchsorted(cum, rank, side="right"))
    before = cum[b - 1] if b else 0
    return (b + (rank - before + 0.5) / counts[b]) * width
  return float((at((n - 1) // 2) + at(n // 2)) / 2.0)


@register("normals")
class Normals(DenseKind):
  default_metrics = ("loss", "mean_angle", "median_angle", "within_11_25", "within_22_5",
                     "within_30")
  valid_metrics = default_metrics
  lower_is_better = frozenset({"loss", "mean_angle", "median_angle"})
  pixel_dims = (3,)

  def check_spec(self, spec):
    if spec.num_outputs != 3:
      raise ValueError(f"task {spec.name!r}: {spec.kind} predicts a 3-d normal per pixel: "
                       f"num_outputs must be 3, got {spec.num_outputs}")

  def check_labels(self, spec, labels, mask):
    raise_bad_pixels(spec, labels, mask, ~np.isfinite(labels).all(-1), "non-finite normals")

  def valid_pixels(self, labels, xp=jnp):
    return xp.any(labels != 0, axis=-1)

  def pixel_loss(self, outputs, labels):
    return 1.0 - (unit(outputs) * unit(labels.astype(outputs.dtype))).sum(-1)

  def _cosines(self, outputs, labels, mask):
    valid = self.numpy_valid(labels, mask)
    o = np.asarray(outputs)[valid].astype(np.float64)
    n = labels[valid].astype(np.float64)
    return (unit(o, np) * unit(n, np)).sum(-1)

  def numpy_loss(self, spec, outputs, labels, mask=None):
    """1 - cos of every valid pixel (flattened), float64."""
    return 1.0 - self._cosines(outputs, labels, mask)

  def chunk_sums(self, spec, outputs, labels, mask):
    cos = self._cosines(outputs, labels, mask)
    angle = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
    bins = np.minimum((angle / MEDIAN_BIN).astype(np.int64), _NUM_BINS - 1)
    sums = {"loss_sum": (1.0 - cos).sum(), "angle_sum": angle.sum(),
            "pixels": np.asarray(angle.size, np.float64),
            "angle_histogram": np.bincount(bins, minlength=_NUM_BINS)}
    sums.update({k: np.asarray((angle < t).sum(), np.float64) for k, t in THRESHOLDS.items()})
    return sums

  def pixel_metrics(self, spec, sums):
    n = sums["pixels"]
    out = {"loss": sums["loss_sum"] / n, "mean_angle": sums["angle_sum"] / n,
           "median_angle": histogram_median(sums["angle_histogram"], MEDIAN_BIN)}
    out.update({k: sums[k] / n for k in THRESHOLDS})
    return out
