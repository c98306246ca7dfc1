"""ResNet-18 (He et al. 2016) with GroupNorm: the CelebA trunk of Sener & Koltun (2018).

Stages are ``block_0 .. block_3`` like every other trunk (``features`` has one
width per stage, so transfer's ``_num_blocks`` counts them); the stem lives in
``block_0`` so ``freeze_bottom:1`` freezes everything below stage 2 and
``truncate:K`` (``num_blocks``) keeps the stem and the first K stages.
Paths: ``block_0/stem_conv``, ``block_0/stem_norm``, ``block_i/unit_j/{conv1,
norm1,conv2,norm2,proj_conv,proj_norm}``. The output is the global average
pool of the last kept stage, [B, features[K-1]].

GroupNorm, not BatchNorm: BatchNorm's running statistics are a second,
non-gradient variable collection (``batch_stats``) that the train step,
replica averaging and checkpoints would have to carry (docs/vision.md says
what that needs). GroupNorm has the same parameters (a scale and a bias per
channel) and no state, and is what big_vision's BiT ResNets use.
"""

import flax.linen as nn
import jax.numpy as jnp

from mtl_jax.models.trunks import TRUNKS

STEMS = ("imagenet", "cifar")
NORMS = ("group",)


def _image(x, trunk: str):
  """[B, H, W] or [B, H, W, C] floating images -> [B, H, W, C]."""
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{trunk} trunk: inputs must be floating images (e.g. pixels / 255), got "
                    f"{x.dtype} of shape {x.shape}")
  if x.ndim == 3:
    x = x[..., None]
  if x.ndim != 4:
    raise ValueError(f"{trunk} trunk: inputs must be [B, H, W] or [B, H, W, C], got {x.shape}")
  return x


def _norm(groups: int, channels: int, name: str) -> nn.GroupNorm:
  g = min(groups, channels)
  if channels % g:
    raise ValueError(f"resnet: GroupNorm with {g} groups does not divide {channels} channels "
                     f"({name}); pick widths divisible by norm_groups or change norm_groups")
  return nn.GroupNorm(num_groups=g, epsilon=1e-5, name=name)


class BasicUnit(nn.Module):
  """Two 3x3 convs with a residual; a 1x1 projection when the shape changes.

  ``dilations`` (conv1, conv2) dilate the 3x3 convs (``dilated_resnet``); the
  parameters are the same for every dilation.
  """
  features: int
  stride: int
  groups: int
  dilations: tuple = (1, 1)
  project: bool = False  # a projection even at stride 1 (a dilated unit that would downsample)

  @nn.compact
  def __call__(self, x):
    def conv(f, k, s, name, d=1):
      return nn.Conv(f, (k, k), (s, s), padding=[(d * (k // 2), d * (k // 2))] * 2,
                     kernel_dilation=(d, d), use_bias=False, name=name)
    d1, d2 = self.dilations
    y = nn.relu(_norm(self.groups, self.features, "norm1")(
        conv(self.features, 3, self.stride, "conv1", d1)(x)))
    y = _norm(self.groups, self.features, "norm2")(conv(self.features, 3, 1, "conv2", d2)(y))
    if self.project or self.stride != 1 or x.shape[-1] != self.features:
      x = _norm(self.groups, self.features, "proj_norm")(conv(self.features, 1, self.stride, "proj_conv")(x))
    return nn.relu(x + y)


class Stage(nn.Module):
  features: int
  units: int
  stride: int
  groups: int
  stem: str = ""  # set on block_0 only
  stem_features: int = 64
  # > 1: the stage keeps the resolution (stride 1) and dilates instead, as the dilated ResNets
  # of semantic segmentation (CSAIL's ResnetDilated: the first conv at dilation/2, then dilation).
  dilation: int = 1

  @nn.compact
  def __call__(self, x):
    if self.stem == "imagenet":  # 7x7/2 conv, 3x3/2 max pool: 224 -> 56
      x = nn.Conv(self.stem_features, (7, 7), (2, 2), padding=[(3, 3)] * 2, use_bias=False,
                  name="stem_conv")(x)
      x = nn.relu(_norm(self.groups, self.stem_features, "stem_norm")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    elif self.stem == "cifar":  # 3x3/1 conv, no pool: for small images (32-64 px)
      x = nn.Conv(self.stem_features, (3, 3), padding=[(1, 1)] * 2, use_bias=False,
                  name="stem_conv")(x)
      x = nn.relu(_norm(self.groups, self.stem_features, "stem_norm")(x))
    d = self.dilation
    for j in range(self.units):
      if d > 1:
        x = BasicUnit(self.features, 1, self.groups, (max(d // 2, 1) if j == 0 else d, d),
                      project=j == 0 and self.stride != 1, name=f"unit_{j}")(x)
      else:
        x = BasicUnit(self.features, self.stride if j == 0 else 1, self.groups,
                      name=f"unit_{j}")(x)
    return x


@TRUNKS.register("resnet")
class ResNet(nn.Module):
  """[B, H, W(, C)] float images -> [B, features[K-1]] (global average pool).

  Defaults are ResNet-18: widths 64..512, two basic units per stage, the
  ImageNet stem (``stem="cifar"``: 3x3 stride-1 conv, no pool, for 32-64 px
  images). ``norm_groups`` is GroupNorm's group count (capped at the width).
  """
  features: tuple = (64, 128, 256, 512)
  units_per_stage: tuple = (2, 2, 2, 2)
  stem: str = "imagenet"
  stem_features: int = 64
  norm: str = "group"
  norm_groups: int = 32
  num_blocks: int = -1  # keep the stem and the first K stages; -1 keeps all

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train  # no dropout, no batch statistics
    if self.norm not in NORMS:
      raise ValueError(f"resnet: norm={self.norm!r}; valid: {list(NORMS)} (BatchNorm needs "
                       f"batch_stats carried by the train step: see docs/vision.md)")
    if self.stem not in STEMS:
      raise ValueError(f"resnet: stem={self.stem!r}; valid: {list(STEMS)}")
    if len(self.features) != len(self.units_per_stage):
      raise ValueError(f"resnet: features {tuple(self.features)} and units_per_stage "
                       f"{tuple(self.units_per_stage)} need one entry per stage")
    n = len(self.features) if self.num_blocks < 0 else self.num_blocks
    if not 1 <= n <= len(self.features):
      raise ValueError(f"resnet: num_blocks={self.num_blocks}; valid: -1 or 1..{len(self.features)}")
    x = _image(x, "resnet")
    for i in range(n):
      x = Stage(self.features[i], self.units_per_stage[i], 1 if i == 0 else 2, self.norm_groups,
                self.stem if i == 0 else "", self.stem_features, name=f"block_{i}")(x)
    return jnp.mean(x, axis=(1, 2))
