"""SegNet (Badrinarayanan et al. 2017) as the shared network of MTAN (Liu et al., CVPR 2019).

The structure of MTAN's ``model_segnet_*.py``: L encoder levels, each a conv
to the level's width then ``convs_per_level[i]`` more convs, then 2x2 max
pooling that keeps its indices; L decoder levels, each max-unpooling with the
mirrored level's indices, a conv to the next width up, then
``convs_per_level`` more convs. Every conv is 3x3 + norm + ReLU. MTAN's
widths are (64, 128, 256, 512, 512) with (1, 1, 2, 2, 2) extra convs; the
output is the last decoder level's feature map [B, H, W, features[0]].

Blocks in forward order: ``block_i`` (i < L) is encoder level i and
``block_{L+j}`` decoder level j (deepest first), each with ``conv_0 ..
conv_n``/{conv, norm}. So ``freeze_bottom:N`` freezes the first N levels and
GradNorm's last shared layer is the last decoder conv. GroupNorm replaces
BatchNorm (no batch statistics to carry: docs/vision.md); ``norm_groups`` is
its group count, capped at the width. H and W must be divisible by 2^L.
"""

import flax.linen as nn

from mtl_jax.models.dense import ConvNormAct, image_inputs, max_pool_with_indices, max_unpool
from mtl_jax.models.trunks import TRUNKS


def decoder_width(features, k: int) -> int:
  """Output width of decoder level ``k`` (k = L-1 is the deepest): the width one level up."""
  return features[max(k - 1, 0)]


class Level(nn.Module):
  """``conv_0`` to ``features``, then ``extra`` more convs; returns (after conv_0, after all)."""
  features: int
  extra: int
  norm_groups: int

  @nn.compact
  def __call__(self, x):
    a = ConvNormAct(self.features, self.norm_groups, name="conv_0")(x)
    b = a
    for c in range(self.extra):
      b = ConvNormAct(self.features, self.norm_groups, name=f"conv_{c + 1}")(b)
    return a, b


@TRUNKS.register("segnet")
class SegNet(nn.Module):
  """[B, H, W(, C)] float images -> [B, H, W, features[0]] (``taps=True``: also every
  level's features, for MTAN's attention modules)."""
  features: tuple = (64, 128, 256, 512, 512)
  convs_per_level: tuple = (1, 1, 2, 2, 2)
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False, taps: bool = False):
    del train  # no dropout, no batch statistics
    f, n = tuple(self.features), len(self.features)
    if len(self.convs_per_level) != n:
      raise ValueError(f"segnet: features {f} and convs_per_level {tuple(self.convs_per_level)} "
                       "need one entry per level")
    x = image_inputs(x, "segnet")
    if x.shape[1] % 2 ** n or x.shape[2] % 2 ** n:
      raise ValueError(f"segnet: {n} pooling levels need height and width divisible by "
                       f"{2 ** n}, got {x.shape[1:3]}")
    enc, up, dec, indices = [], [], [], []
    for i in range(n):
      a, b = Level(f[i], self.convs_per_level[i], self.norm_groups, name=f"block_{i}")(x)
      x, idx = max_pool_with_indices(b)
      enc.append((a, b))
      indices.append(idx)
    for j in range(n):
      k = n - 1 - j
      u = max_unpool(x, indices[k])
      _, x = Level(decoder_width(f, k), self.convs_per_level[k], self.norm_groups,
                   name=f"block_{n + j}")(u)
      up.append(u)
      dec.append(x)
    if taps:
      return x, dict(encoder=enc, upsampled=up, decoder=dec)
    return x
