"""MTAN (Liu, Johns & Davison, CVPR 2019): task-specific soft-attention modules over a shared
SegNet, the structure of MTAN's ``model_segnet_mtan.py``.

Per task t and encoder level j, an attention mask ``a = att_t,j([enc_j; s_{j-1}])``
(two 1x1 convs, each + norm, ReLU then sigmoid) gates the level's output,
``s_j = pool(conv_j(a * enc_j_out))``, where ``enc_j`` is the level's first
conv and ``conv_j`` a 3x3 conv to the next width. The decoder mirrors it on
the unpooled features with bilinear (``align_corners=True``) upsampling. The
3x3 convs ``conv_j`` are shared by all tasks (as in MTAN), the attention
layers are per task. Task t's features are its gated last decoder level
[B, H, W, features[0]]; ``decoder=dict(name="conv")`` then gives MTAN's
prediction layer per task.

Paths: ``trunk/...`` is the shared SegNet (the ``segnet`` trunk's paths,
so a hard-sharing SegNet checkpoint loads), ``attention/encoder_conv_j``
and ``attention/decoder_conv_j`` the shared convs, ``attention/
{encoder,decoder}_att_j/{dense_0,norm_0,dense_1,norm_1}`` the per-task
attention layers ([T, ...], row t of ``task_order``), ``heads/...``.
One difference from MTAN's widths-specific code: the deepest decoder
conv maps to ``features[-2]`` (MTAN keeps ``features[-1]``, equal there:
512, 512), so any widths work.
"""

from typing import Any, Dict, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax import kinds
from mtl_jax.models.columns import ColumnHeads, task_order
from mtl_jax.models.dense import ConvNormAct, StackedGroupNorm, max_pool, resize_bilinear
from mtl_jax.models.dense_heads import dense_heads, image_size
from mtl_jax.models.heads import StackedDense
from mtl_jax.models.segnet import decoder_width
from mtl_jax.models.sharing import SHARED_FEATURES, SHARING, TASK_FEATURES, ParamLayout
from mtl_jax.models.trunks import build_trunk
from mtl_jax.tasks import TaskGroup


def _fold(fn, x: jax.Array) -> jax.Array:
  """Applies a per-image ``fn`` with shared parameters to per-task maps [T, B, h, w, C]."""
  t, b = x.shape[:2]
  y = fn(x.reshape((t * b,) + x.shape[2:]))
  return y.reshape((t, b) + y.shape[1:])


class AttentionLayer(nn.Module):
  """MTAN's ``att_layer`` per task: 1x1 conv, norm, ReLU, 1x1 conv, norm, sigmoid.

  Input shared [B, h, w, C_in] or per task [T, B, h, w, C_in]; output [T, B, h, w, C].
  """
  num_tasks: int
  features: int
  norm_groups: int

  @nn.compact
  def __call__(self, x):
    t, f = self.num_tasks, self.features
    x = StackedDense(t, f, extra_axes=2, name="dense_0")(x)
    x = nn.relu(StackedGroupNorm(t, self.norm_groups, name="norm_0")(x))
    x = StackedDense(t, f, extra_axes=2, name="dense_1")(x)
    return nn.sigmoid(StackedGroupNorm(t, self.norm_groups, name="norm_1")(x))


class TaskAttention(nn.Module):
  """Every task's attention path through the shared SegNet's levels -> [T, B, H, W, f_0]."""
  num_tasks: int
  features: Sequence[int]
  norm_groups: int

  @nn.compact
  def __call__(self, taps: Dict[str, Any]) -> jax.Array:
    f, n, t, g = tuple(self.features), len(self.features), self.num_tasks, self.norm_groups
    s = None
    for j, (first, out) in enumerate(taps["encoder"]):
      att_in = first if j == 0 else jnp.concatenate(
          [jnp.broadcast_to(first, (t,) + first.shape), s], axis=-1)
      mask = AttentionLayer(t, f[j], g, name=f"encoder_att_{j}")(att_in)
      conv = ConvNormAct(f[min(j + 1, n - 1)], g, name=f"encoder_conv_{j}")
      s = _fold(lambda v: max_pool(conv(v)), mask * out[None])
    for j, (unpooled, out) in enumerate(zip(taps["upsampled"], taps["decoder"])):
      k = n - 1 - j
      up = resize_bilinear(s, (2 * s.shape[2], 2 * s.shape[3]))
      up = _fold(ConvNormAct(decoder_width(f, k), g, name=f"decoder_conv_{j}"), up)
      att_in = jnp.concatenate([jnp.broadcast_to(unpooled, (t,) + unpooled.shape), up], axis=-1)
      s = AttentionLayer(t, decoder_width(f, k), g, name=f"decoder_att_{j}")(att_in) * out[None]
    return s


@SHARING.register("mtan")
class MTAN(nn.Module):
  """Shared SegNet (``trunk``, a ``segnet`` config) + per-task attention + heads.

  ParamLayout: the SegNet and the attention path's shared convs are reached
  by every task's loss (``shared``); the attention layers, like the heads,
  only by their own task's, so they get its plain gradient on every
  aggregator path and stay out of the Gramian. There is no single shared
  representation (each task's attention reads every level), so
  ``weighting.mode='representation'`` is an error naming the scheme.
  """
  layout = ParamLayout(shared=r"trunk/.*|attention/(encoder|decoder)_conv_\d+/.*",
                       body=r"trunk/.*|attention/(encoder|decoder)_conv_\d+/.*", blocks="trunk")
  trunk: Dict[str, Any]
  groups: Sequence[TaskGroup]
  decoder: Optional[Dict[str, Any]] = None
  head_hidden: Sequence[int] = ()

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> Dict[str, jax.Array]:
    if self.trunk.get("name") != "segnet":
      raise ValueError(f"sharing 'mtan' attends over a SegNet's levels; got trunk "
                       f"{self.trunk.get('name')!r}, use trunk=dict(name='segnet', ...)")
    asked = ((self.is_mutable_collection("perturbations") and not self.is_initializing())
             or self.has_variable("perturbations", SHARED_FEATURES)
             or self.has_variable("perturbations", TASK_FEATURES))
    if asked:
      raise ValueError("sharing 'mtan' has no shared representation for weighting "
                       "mode='representation' (every task's attention reads every SegNet "
                       "level); use mode='gramian' or 'jacobian'")
    for g in self.groups:
      if kinds.get(g.kind).output_axes != 2:
        raise ValueError(f"sharing 'mtan' predicts per pixel; task group {g.key!r} ({g.names}) "
                         f"is of kind {g.kind!r}, which is not pixel-wise (segmentation, depth, "
                         "normals are)")
    trunk = build_trunk(self.trunk, name="trunk")
    _, taps = trunk(inputs, train, True)
    features = TaskAttention(len(task_order(self.groups)), tuple(trunk.features),
                             trunk.norm_groups, name="attention")(taps)
    if self.decoder is not None:
      if self.head_hidden:
        raise ValueError("model.decoder replaces the linear heads: it takes no model.head_hidden")
      return dense_heads(self.groups, self.decoder)(features, image_size(inputs), train)
    return ColumnHeads(self.groups, tuple(self.head_hidden), name="heads")(features)
