"""Shared trunks. Layers are named ``block_0 .. block_n`` so that freezing,
partial loading and truncation can select them by regex on parameter paths."""

from typing import Any, Dict, Sequence, Tuple

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.registry import Registry

TRUNKS = Registry("trunk")

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "tanh": jnp.tanh, "silu": nn.silu,
               "linear": lambda x: x}  # linear: low-rank linear shared trunks


def activation(name: str):
  if name not in ACTIVATIONS:
    raise KeyError(f"unknown activation {name!r}; valid names: {sorted(ACTIVATIONS)}")
  return ACTIVATIONS[name]


class DenseBlock(nn.Module):
  features: int
  act: str = "relu"
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = activation(self.act)(nn.Dense(self.features)(x))
    if self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    return x


@TRUNKS.register("mlp")
class MLP(nn.Module):
  """Flattens the input, then ``len(features)`` Dense+activation blocks."""
  features: Sequence[int] = (128, 128)
  act: str = "relu"
  dropout: float = 0.0
  num_blocks: int = -1  # keep only the first K blocks (truncation); -1 keeps all

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape(x.shape[0], -1)
    n = len(self.features) if self.num_blocks < 0 else self.num_blocks
    for i, f in enumerate(self.features[:n]):
      x = DenseBlock(f, self.act, self.dropout, name=f"block_{i}")(x, train)
    return x


class ConvBlock(nn.Module):
  features: int
  kernel_size: int
  stride: int
  act: str = "relu"

  @nn.compact
  def __call__(self, x):
    spatial = x.ndim - 2
    x = nn.Conv(self.features, (self.kernel_size,) * spatial, strides=(self.stride,) * spatial,
                padding="SAME")(x)
    return activation(self.act)(x)


@TRUNKS.register("cnn")
class CNN(nn.Module):
  """Small 1-D or 2-D CNN, chosen by the input rank.

  [B, L] and [B, L, C] inputs are 1-D sequences (MNIST-1D), [B, H, W] and
  [B, H, W, C] images. The defaults are the MNIST-1D paper's CNN (25 channels,
  kernels 5/3/3, stride 2); the output is the flattened last feature map.
  """
  features: Sequence[int] = (25, 25, 25)
  kernel_sizes: Sequence[int] = (5, 3, 3)
  strides: Sequence[int] = (2, 2, 2)
  act: str = "relu"
  image: bool = False  # treat [B, H, W] as an image (else as a 1-D multi-channel sequence)
  num_blocks: int = -1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if not len(self.features) == len(self.kernel_sizes) == len(self.strides):
      raise ValueError("cnn: features, kernel_sizes and strides need equal lengths, got "
                       f"{len(self.features)}, {len(self.kernel_sizes)}, {len(self.strides)}")
    if x.ndim == 2 or (x.ndim == 3 and self.image):
      x = x[..., None]
    n = len(self.features) if self.num_blocks < 0 else self.num_blocks
    for i in range(n):
      x = ConvBlock(self.features[i], self.kernel_sizes[i], self.strides[i], self.act,
                    name=f"block_{i}")(x)
    return x.reshape(x.shape[0], -1)


@TRUNKS.register("identity")
class Identity(nn.Module):
  """No trunk: heads see the flattened input (logistic regression, cached features)."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    return x.reshape(x.shape[0], -1)


def trunk_class(trunk_config) -> Tuple[Any, Dict[str, Any]]:
  """(trunk class, checked options) from ``{"name": registry name, **options}``.

  Lifted transforms (nn.vmap in the stacked schemes) need the class, not an
  instance; ``build_trunk`` instantiates it.
  """
  kwargs = dict(trunk_config)
  cls = TRUNKS.get(kwargs.pop("name"))
  valid = [f for f in cls.__dataclass_fields__ if f not in ("parent", "name")]
  unknown = sorted(set(kwargs) - set(valid))
  if unknown:
    raise ValueError(f"trunk {trunk_config['name']!r}: unknown options {unknown}; valid: {valid}")
  return cls, kwargs


def build_trunk(trunk_config, name: str = "trunk") -> nn.Module:
  """``trunk_config`` = {"name": registry name, **constructor kwargs}."""
  cls, kwargs = trunk_class(trunk_config)
  return cls(**kwargs, name=name)
