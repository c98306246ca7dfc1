"""Layers of the encoder-decoder (pixel-wise) models: SegNet, MTAN, DeepLab heads.

Exact equivalents of the PyTorch ops the MTAN and LibMTL code uses, so a model
built from them computes what theirs does (tests/test_dense_models.py checks
each against torch): 2x2 max pooling with indices and its unpooling
(``nn.MaxPool2d(2, 2, return_indices=True)`` / ``nn.MaxUnpool2d``) and
bilinear resizing with ``align_corners=True`` (``F.interpolate``), which
``jax.image.resize`` (half-pixel centres) does not give.
"""

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _check_even(x: jax.Array, who: str) -> None:
  if x.shape[1] % 2 or x.shape[2] % 2:
    raise ValueError(f"{who}: 2x2 pooling needs even height and width at every level, got a "
                     f"feature map {x.shape[1:3]}; use an image size divisible by 2^levels")


def max_pool_with_indices(x: jax.Array) -> Tuple[jax.Array, jax.Array]:
  """2x2 stride-2 max pool of [B, H, W, C] -> ([B, H/2, W/2, C], argmax in each window 0..3).

  Ties go to the first position in row-major order, as in PyTorch.
  """
  _check_even(x, "max_pool_with_indices")
  b, h, w, c = x.shape
  windows = x.reshape(b, h // 2, 2, w // 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  windows = windows.reshape(b, h // 2, w // 2, 4, c)
  idx = jnp.argmax(windows, axis=3)
  return jnp.take_along_axis(windows, idx[:, :, :, None], axis=3)[:, :, :, 0], idx


def max_unpool(x: jax.Array, idx: jax.Array) -> jax.Array:
  """Inverse of ``max_pool_with_indices``: each value back at its argmax, zeros elsewhere."""
  b, h, w, c = x.shape
  onehot = jax.nn.one_hot(idx, 4, axis=3, dtype=x.dtype)  # [B, h, w, 4, C]
  up = (onehot * x[:, :, :, None]).reshape(b, h, w, 2, 2, c).transpose(0, 1, 3, 2, 4, 5)
  return up.reshape(b, 2 * h, 2 * w, c)


def max_pool(x: jax.Array) -> jax.Array:
  _check_even(x, "max_pool")
  return nn.max_pool(x, (2, 2), strides=(2, 2))


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
  """[n_out, n_in] linear interpolation with aligned corners (src = i (n_in-1)/(n_out-1))."""
  m = np.zeros((n_out, n_in), np.float32)
  if n_in == 1 or n_out == 1:
    m[:, 0] = 1.0
    return m
  src = np.arange(n_out) * (n_in - 1) / (n_out - 1)
  lo = np.minimum(np.floor(src).astype(int), n_in - 2)
  frac = (src - lo).astype(np.float32)
  m[np.arange(n_out), lo] = 1.0 - frac
  m[np.arange(n_out), lo + 1] += frac
  return m


def resize_bilinear(x: jax.Array, size: Sequence[int]) -> jax.Array:
  """[..., H, W, C] -> [..., h, w, C], bilinear with ``align_corners=True`` (PyTorch's)."""
  h, w = int(size[0]), int(size[1])
  if x.shape[-3:-1] == (h, w):
    return x
  rows = jnp.asarray(_interp_matrix(h, x.shape[-3]), x.dtype)
  cols = jnp.asarray(_interp_matrix(w, x.shape[-2]), x.dtype)
  return jnp.einsum("hH,...HWc,wW->...hwc", rows, x, cols)


def group_norm(channels: int, groups: int, name: str) -> nn.GroupNorm:
  """GroupNorm with ``min(groups, channels)`` groups (BatchNorm's parameters, no state)."""
  g = min(groups, channels)
  if channels % g:
    raise ValueError(f"GroupNorm with {g} groups does not divide {channels} channels ({name}); "
                     "pick widths divisible by norm_groups or change norm_groups")
  return nn.GroupNorm(num_groups=g, epsilon=1e-5, name=name)


class ConvNormAct(nn.Module):
  """k x k conv (bias, 'same' padding, optional dilation) -> GroupNorm -> ReLU: MTAN's
  ``conv_layer`` and DeepLab's conv-BN-ReLU, with GroupNorm for BatchNorm."""
  features: int
  norm_groups: int
  kernel_size: int = 3
  dilation: int = 1
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    k, d = self.kernel_size, self.dilation
    pad = d * (k // 2)
    x = nn.Conv(self.features, (k, k), padding=[(pad, pad)] * 2, kernel_dilation=(d, d),
                use_bias=self.use_bias, name="conv")(x)
    return nn.relu(group_norm(self.features, self.norm_groups, "norm")(x))


class StackedGroupNorm(nn.Module):
  """GroupNorm of per-task features [T, B, H, W, C] with a scale and bias per task, [T, C]."""
  num_tasks: int
  groups: int
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x):
    t, c = self.num_tasks, x.shape[-1]
    g = min(self.groups, c)
    if c % g:
      raise ValueError(f"GroupNorm with {g} groups does not divide {c} channels; pick widths "
                       "divisible by norm_groups or change norm_groups")
    scale = self.param("scale", nn.initializers.ones, (t, c))
    bias = self.param("bias", nn.initializers.zeros, (t, c))
    xs = x.reshape(x.shape[:-1] + (g, c // g)).astype(jnp.float32)
    axes = tuple(range(2, x.ndim - 1)) + (x.ndim,)  # spatial and within-group channels
    mean = xs.mean(axis=axes, keepdims=True)
    var = jnp.square(xs - mean).mean(axis=axes, keepdims=True)
    y = ((xs - mean) * jax.lax.rsqrt(var + self.epsilon)).reshape(x.shape).astype(x.dtype)
    shape = (t,) + (1,) * (x.ndim - 2) + (c,)
    return y * scale.reshape(shape).astype(x.dtype) + bias.reshape(shape).astype(x.dtype)


def image_inputs(x, who: str) -> jax.Array:
  """[B, H, W] or [B, H, W, C] floating images -> [B, H, W, C]."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{who}: inputs must be floating images (e.g. pixels / 255), got "
                    f"{x.dtype} of shape {x.shape}")
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"{who}: inputs must be [B, H, W] or [B, H, W, C], got {x.shape}")
  return x
