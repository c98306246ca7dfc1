"""Dilated ResNet encoder (output stride 8 or 16): the encoder of DeepLabV3 and of LibMTL's
NYUv2 example, returning the last stage's feature map instead of its global pool.

Same stages, units and parameter paths as the ``resnet`` trunk
(``block_0/stem_conv``, ``block_i/unit_j/{conv1,norm1,conv2,norm2,proj_conv,
proj_norm}``) and the same shapes, so a ``resnet`` checkpoint pretrained on
classification loads into it unchanged (``config.init_from``, docs/vision.md).
Dilation changes no parameter: the last stages keep their resolution (stride
1) and dilate their 3x3 convs instead, as CSAIL's ``ResnetDilated`` that
MTAN and LibMTL use (the first conv of a stage at dilation d/2, the rest at
d): ``output_stride=8`` dilates stages 2 and 3 by 2 and 4, ``16`` stage 3 by
2, ``32`` is the plain ResNet. With the ImageNet stem a 288x384 NYUv2 image
gives a 36x48 map.
"""

import flax.linen as nn

from mtl_jax.models.resnet import NORMS, STEMS, Stage, _image
from mtl_jax.models.trunks import TRUNKS

OUTPUT_STRIDES = (8, 16, 32)


def stage_dilations(num_stages: int, output_stride: int):
  """Dilation of each stage: 1 where it downsamples as usual, 2, 4, ... where it dilates."""
  if output_stride not in OUTPUT_STRIDES:
    raise ValueError(f"dilated_resnet: output_stride={output_stride}; valid: {list(OUTPUT_STRIDES)}")
  dilated = {8: 2, 16: 1, 32: 0}[output_stride]
  if dilated > num_stages - 1:
    raise ValueError(f"dilated_resnet: output_stride={output_stride} dilates {dilated} stages; "
                     f"the model has only {num_stages - 1} after the first")
  out = [1] * num_stages
  for i in range(dilated):
    out[num_stages - dilated + i] = 2 ** (i + 1)
  return out


@TRUNKS.register("dilated_resnet")
class DilatedResNet(nn.Module):
  """[B, H, W(, C)] float images -> [B, H/s, W/s, features[-1]] (s = ``output_stride`` with
  the ImageNet stem; the CIFAR stem does not downsample, so s/4 with it). Options as ``resnet``
  (ResNet-18 defaults, GroupNorm)."""
  features: tuple = (64, 128, 256, 512)
  units_per_stage: tuple = (2, 2, 2, 2)
  stem: str = "imagenet"
  stem_features: int = 64
  norm: str = "group"
  norm_groups: int = 32
  output_stride: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    if self.norm not in NORMS:
      raise ValueError(f"dilated_resnet: norm={self.norm!r}; valid: {list(NORMS)}")
    if self.stem not in STEMS:
      raise ValueError(f"dilated_resnet: stem={self.stem!r}; valid: {list(STEMS)}")
    if len(self.features) != len(self.units_per_stage):
      raise ValueError(f"dilated_resnet: features {tuple(self.features)} and units_per_stage "
                       f"{tuple(self.units_per_stage)} need one entry per stage")
    dilations = stage_dilations(len(self.features), self.output_stride)
    x = _image(x, "dilated_resnet")
    for i, d in enumerate(dilations):
      x = Stage(self.features[i], self.units_per_stage[i], 1 if i == 0 else 2, self.norm_groups,
                self.stem if i == 0 else "", self.stem_features, dilation=d, name=f"block_{i}")(x)
    return x
