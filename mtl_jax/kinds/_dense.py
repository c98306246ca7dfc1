"""What the per-pixel kinds (segmentation, depth, normals) share.

Batch format: inputs [B, H, W, C], labels [B, H, W] (segmentation, depth) or
[B, H, W, 3] (normals), ``mask[task]`` bool [B]: one entry per example, as for
the per-example kinds. Which pixels of a labelled example count comes from the
label itself, the convention of the NYUv2 files that LibMTL and MTAN read:
segmentation -1, depth 0, normal (0, 0, 0) mark a pixel without ground truth.
Keeping the per-pixel validity in the label keeps the mask one bool per
example (a [B, H, W] mask per task would double the label memory) and lets
every task-level mechanism (missing labels, several datasets, eval padding)
work unchanged.

Losses are means over the valid pixels of the labelled examples of the batch
(LibMTL's and MTAN's losses: one mean over the batch's pixels, not a mean of
per-image means); a batch without a valid pixel gives exactly 0. Metrics are
sums over the split (``streams_metrics``), so evaluation keeps no outputs.
"""

from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.kinds.base import LabelError, TaskKind, add_sums, safe_labels

PIXEL_AXES = (-3, -2, -1)  # B, H, W of a per-pixel array [..., B, H, W]
SUM_CHUNK = 8  # examples per step of the NumPy metric sums


def pixel_mean(per_pixel: jax.Array, valid: jax.Array) -> jax.Array:
  """Mean over the valid pixels of the batch, [..., B, H, W] -> [...]; exactly 0 with none."""
  total = jnp.sum(jnp.where(valid, per_pixel, 0.0), axis=PIXEL_AXES)
  count = jnp.sum(valid.astype(per_pixel.dtype), axis=PIXEL_AXES)
  return total / jnp.maximum(count, 1.0)


def raise_bad_pixels(spec, labels: np.ndarray, mask: np.ndarray, bad: np.ndarray,
                     what: str) -> None:
  """LabelError naming the task, how many pixels, and the first (example, row, column).

  ``bad`` is bool [N, H, W] over all examples (False where mask is).
  """
  bad = bad & mask.reshape(mask.shape + (1,) * (bad.ndim - 1))
  if not bad.any():
    return
  i, r, c = (int(v) for v in np.argwhere(bad)[0][:3])
  raise LabelError(f"task {spec.name!r} ({spec.kind}): {int(bad.sum())} pixels with {what}; "
                   f"first at example {i}, pixel ({r}, {c}): {labels[i, r, c]!r}")


class DenseKind(TaskKind):
  """Base of the per-pixel kinds: outputs [..., B, H, W, C], one mask bool per example."""
  output_axes = 2
  streams_metrics = True
  pixel_dims: Tuple[int, ...] = ()  # label axes after H, W: (3,) for normals

  def label_shape(self, num_outputs):
    return (None, None) + self.pixel_dims

  # The two methods a dense kind defines (jax and NumPy alike: ``xp`` is the module).
  def valid_pixels(self, labels, xp=jnp):
    """bool [..., B, H, W]: the pixels with ground truth."""
    raise NotImplementedError

  def pixel_loss(self, outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Loss of every pixel, [..., B, H, W]; labels are safe (valid everywhere they are read)."""
    raise NotImplementedError

  def _check_shapes(self, outputs, labels):
    want = labels.shape[:labels.ndim - len(self.pixel_dims)]
    if outputs.shape[:-1] != want:
      raise ValueError(f"{self.name}: outputs {outputs.shape} do not fit labels {labels.shape}: "
                       f"a dense head must return [..., B, H, W, C] at the labels' resolution")

  def _valid(self, labels, mask):
    """Safe labels and the valid pixels of labelled examples."""
    labels = safe_labels(labels, mask)
    return labels, mask[..., None, None] & self.valid_pixels(labels)

  def per_example_loss(self, outputs, labels, mask=None):
    """Loss per pixel [..., B, H, W], 0 at pixels without ground truth."""
    self._check_shapes(outputs, labels)
    if mask is None:
      mask = jnp.ones(labels.shape[:labels.ndim - 2 - len(self.pixel_dims)], bool)
    labels, valid = self._valid(labels, mask)
    return jnp.where(valid, self.pixel_loss(outputs, labels), 0.0)

  def loss(self, outputs, labels, mask):
    self._check_shapes(outputs, labels)
    labels, valid = self._valid(labels, mask)
    return pixel_mean(self.pixel_loss(outputs, labels), valid)

  def loss_count(self, labels, mask):
    """Valid pixels of labelled examples: the denominator of ``loss``."""
    _, valid = self._valid(labels, mask)
    return jnp.sum(valid.astype(jnp.float32), axis=PIXEL_AXES)

  def numpy_valid(self, labels: np.ndarray, mask=None) -> np.ndarray:
    valid = self.valid_pixels(labels, np)
    if mask is not None:
      valid = valid & np.asarray(mask, bool).reshape(mask.shape + (1, 1))
    return valid

  def metric_sums(self, spec, outputs, labels, mask):
    """``chunk_sums`` added over chunks of ``SUM_CHUNK`` examples: float64 work arrays of a
    whole eval batch of maps (NYUv2: 13 x 288 x 384 per image) would not fit."""
    total = None
    for i in range(0, len(labels), SUM_CHUNK):
      sl = slice(i, i + SUM_CHUNK)
      total = add_sums(total, self.chunk_sums(spec, outputs[sl], labels[sl],
                                              None if mask is None else mask[sl]))
    return total

  def chunk_sums(self, spec, outputs, labels, mask):
    raise NotImplementedError

  def metrics_from_sums(self, spec, sums):
    with np.errstate(divide="ignore", invalid="ignore"):  # no valid pixel: NaN metrics
      return self.pixel_metrics(spec, sums)

  def pixel_metrics(self, spec, sums):
    raise NotImplementedError
