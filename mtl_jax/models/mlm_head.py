"""BERT's masked-LM head over gathered positions, its decoder tied to the trunk's word embeddings.

``logits = LN(act(gather(h, positions) @ W + b)) @ E^T + bias`` as Hugging Face's
``BertOnlyMLMHead`` (transform: dense + hidden_act + LayerNorm; decoder: the
word-embedding table E, plus an output bias), except that the hidden states
are gathered at the K masked positions *before* the transform and the
vocabulary projection: [B, K, V] logits instead of [B, L, V]
(benchmarks/mlm_step_time.py measures the saving).

Parameters (a leading task axis, as every stacked head; row t = task t of the
group): ``transform_kernel`` [T, D, D], ``transform_bias`` [T, D],
``norm_scale`` / ``norm_bias`` [T, D], ``bias`` [T, V]. E is not a head
parameter: it is ``trunk/embeddings/word/embedding``, so MLM gradients train it.
Checkpoints' ``cls.predictions.*`` load into these (pretrained/hf_bert.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.kinds.masked_lm import POSITIONS
from mtl_jax.models.heads import KIND_HEADS


def _act(name):
  from mtl_jax.models.bert import HIDDEN_ACTS
  return HIDDEN_ACTS[name]


@KIND_HEADS.register("masked_lm")
class MaskedLMHead(nn.Module):
  """Features [B, L, D] (or per-task [T, B, L, D]) -> logits [T, B, K, V] at ``context`` positions."""
  num_tasks: int
  vocab_size: int

  @nn.compact
  def __call__(self, features: jax.Array, context) -> jax.Array:
    if context is None:
      raise ValueError("masked_lm: its head reads the trunk's word embeddings and the masked "
                       "positions, which only sharing='hard' (one trunk) passes to heads")
    table, cfg, inputs = context["embedding"], context["trunk"], context["inputs"]
    if table.shape[0] != self.vocab_size:
      raise ValueError(f"masked_lm: num_outputs {self.vocab_size} must equal the trunk's "
                       f"vocabulary ({table.shape[0]} word embeddings)")
    if not isinstance(inputs, dict) or POSITIONS not in inputs:
      raise KeyError(f"masked_lm: the inputs lack {POSITIONS!r} (the masked positions [B, K])")
    positions = jnp.asarray(inputs[POSITIONS], jnp.int32)
    per_task = features.ndim == 4
    if features.ndim != 3 + per_task or positions.ndim != 2:
      raise ValueError(f"masked_lm: needs per-token features [B, L, D] (trunk pooling='none') "
                       f"and positions [B, K]; got features {features.shape}, positions "
                       f"{positions.shape}")
    t, d = self.num_tasks, features.shape[-1]
    dtype = jnp.dtype(cfg.get("dtype", "float32"))
    init = nn.initializers.normal(cfg.get("init_std", 0.02))
    kernel = self.param("transform_kernel", init, (t, d, d))
    bias = self.param("transform_bias", nn.initializers.zeros, (t, d))
    scale = self.param("norm_scale", nn.initializers.ones, (t, d))
    shift = self.param("norm_bias", nn.initializers.zeros, (t, d))
    out_bias = self.param("bias", nn.initializers.zeros, (t, self.vocab_size))
    idx = positions[..., None]
    if per_task:  # [T, B, L, D] -> [T, B, K, D]
      h = jnp.take_along_axis(features, idx[None], axis=2).astype(dtype)
      h = jnp.einsum("tbkd,tde->tbke", h, kernel.astype(dtype))
    else:  # [B, L, D] -> [B, K, D], every task's transform on it
      h = jnp.take_along_axis(features, idx, axis=1).astype(dtype)
      h = jnp.einsum("bkd,tde->tbke", h, kernel.astype(dtype))
    h = _act(cfg.get("hidden_act", "gelu"))(h + bias[:, None, None].astype(dtype))
    h = h.astype(jnp.float32)  # LayerNorm statistics in float32
    mean = h.mean(-1, keepdims=True)
    var = jnp.square(h - mean).mean(-1, keepdims=True)
    h = (h - mean) * jax.lax.rsqrt(var + cfg.get("layer_norm_eps", 1e-12))
    h = h * scale[:, None, None] + shift[:, None, None]
    logits = jnp.einsum("tbkd,vd->tbkv", h.astype(dtype), table.astype(dtype))
    return logits.astype(jnp.float32) + out_bias[:, None, None]
