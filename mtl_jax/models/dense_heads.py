"""Per-task dense decoders: a head per task that maps a feature map to C channels per pixel.

``config.model.decoder = dict(name=..., **options)`` on the ``hard``,
``single_task``/``soft`` and ``mtan`` schemes replaces the per-pixel linear
head by one of these, stacked over the tasks of a group (``nn.vmap``: T
decoders compile like one; paths ``heads/<group>/...`` with a leading task
axis, so transfer strategies treat them as heads). The output is resized to
the input resolution (bilinear, ``align_corners=True``) when the features are
coarser (the dilated ResNet's output stride 8), as LibMTL's NYUv2 example.

- ``conv``: MTAN's prediction layer, ``num_convs`` 3x3 convs (``features``
  wide, -1: the input's width) then a 1x1 conv to the outputs; no norm or
  activation between, as ``conv_layer(pred=True)``.
- ``aspp``: DeepLabV3's head (Chen et al. 2017) as in LibMTL's NYUv2
  example: ASPP (a 1x1 branch, 3x3 branches at ``rates``, image pooling;
  each conv + norm + ReLU, ``features`` wide), a 1x1 projection with dropout,
  a 3x3 conv + norm + ReLU, a 1x1 conv to the outputs. GroupNorm for
  BatchNorm.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax import kinds
from mtl_jax.models.columns import task_order, task_slices
from mtl_jax.models.dense import ConvNormAct, resize_bilinear
from mtl_jax.registry import Registry
from mtl_jax.tasks import TaskGroup

DECODERS = Registry("dense decoder")


@DECODERS.register("conv")
class ConvDecoder(nn.Module):
  """[B, h, w, D] -> [B, h, w, outputs]: ``num_convs`` 3x3 convs, then a 1x1 conv."""
  outputs: int
  features: int = -1
  num_convs: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    width = x.shape[-1] if self.features == -1 else self.features
    for i in range(self.num_convs):
      x = nn.Conv(width, (3, 3), padding=[(1, 1)] * 2, name=f"conv_{i}")(x)
    return nn.Conv(self.outputs, (1, 1), name="out")(x)


@DECODERS.register("aspp")
class ASPPDecoder(nn.Module):
  """[B, h, w, D] -> [B, h, w, outputs]: DeepLabV3's ASPP head."""
  outputs: int
  features: int = 256
  rates: tuple = (12, 24, 36)
  dropout: float = 0.5
  norm_groups: int = 32

  @nn.compact
  def __call__(self, x, train: bool = False):
    f, g = self.features, self.norm_groups
    branches = [ConvNormAct(f, g, kernel_size=1, use_bias=False, name="aspp_1x1")(x)]
    for r in self.rates:
      branches.append(ConvNormAct(f, g, dilation=r, use_bias=False, name=f"aspp_rate{r}")(x))
    pooled = ConvNormAct(f, g, kernel_size=1, use_bias=False, name="aspp_pool")(
        jnp.mean(x, axis=(1, 2), keepdims=True))
    branches.append(jnp.broadcast_to(pooled, x.shape[:3] + (f,)))
    y = ConvNormAct(f, g, kernel_size=1, use_bias=False, name="project")(
        jnp.concatenate(branches, axis=-1))
    if self.dropout:
      y = nn.Dropout(self.dropout, deterministic=not train)(y)
    y = ConvNormAct(f, g, use_bias=False, name="conv")(y)
    return nn.Conv(self.outputs, (1, 1), name="out")(y)


def decoder_class(decoder_config) -> Tuple[Any, Dict[str, Any]]:
  """(decoder class, checked options) from ``{"name": registry name, **options}``."""
  cfg = dict(decoder_config)
  if "name" not in cfg:
    raise ValueError(f"model.decoder needs a name; valid: {sorted(DECODERS)}")
  cls = DECODERS.get(cfg.pop("name"))
  valid = [f for f in cls.__dataclass_fields__ if f not in ("parent", "name", "outputs")]
  unknown = sorted(set(cfg) - set(valid))
  if unknown:
    raise ValueError(f"model.decoder {decoder_config['name']!r}: unknown options {unknown}; "
                     f"valid: {valid}")
  return cls, cfg


def _stacked(cls, size: int, per_task: bool):
  return nn.vmap(cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                 in_axes=(0 if per_task else None, None), out_axes=0, axis_size=size)


class DenseHeads(nn.Module):
  """One stacked decoder per task group on a feature map; outputs at ``size``.

  ``features`` are shared [B, h, w, D] or per task [T, B, h, w, D] (T = every
  task, rows in ``task_order``; group g reads its own rows). Returns
  ``{group.key: [T_g, B, H, W, n]}``. Paths: ``heads/<group.key>/<layer>/...``
  with a leading T_g axis.
  """
  groups: Sequence[TaskGroup]
  decoder: Dict[str, Any]

  @nn.compact
  def __call__(self, features: jax.Array, size: Sequence[int],
               train: bool = False) -> Dict[str, jax.Array]:
    cls, options = decoder_class(self.decoder)
    per_task = features.ndim == 5
    if features.ndim not in (4, 5):
      raise ValueError(f"model.decoder: the trunk must output a feature map [B, h, w, D] (an "
                       f"encoder-decoder or dilated trunk), got features {features.shape}")
    n = len(task_order(self.groups))
    if per_task and features.shape[0] != n:
      raise ValueError(f"DenseHeads: per-task features {features.shape} must lead with the "
                       f"{n} tasks")
    out = {}
    for g in self.groups:
      h = features
      if per_task:
        start, stop = task_slices(self.groups)[g.key]
        h = features[start:stop]
      kind = kinds.get(g.kind)
      if kind.output_axes != 2:
        raise ValueError(f"model.decoder predicts per pixel; task group {g.key!r} ({g.names}) is "
                         f"of kind {g.kind!r}, which is not pixel-wise (segmentation, depth, "
                         "normals are)")
      outputs = kind.head_outputs(g.num_outputs)
      y = _stacked(cls, len(g.names), per_task)(outputs=outputs, **options, name=g.key)(h, train)
      out[g.key] = resize_bilinear(y, size)
    return out


def image_size(inputs) -> Tuple[int, int]:
  """(H, W) of [B, H, W] or [B, H, W, C] images."""
  return int(inputs.shape[1]), int(inputs.shape[2])


def dense_heads(groups, decoder: Optional[Dict[str, Any]]):
  """DenseHeads named ``heads`` (the path every head has), or None without a decoder."""
  return None if decoder is None else DenseHeads(tuple(groups), decoder, name="heads")
