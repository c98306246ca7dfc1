"""A BERT-family Transformer encoder trunk (post-LN, as Devlin et al. 2019).

Parameter paths mirror the Hugging Face ``BertModel`` layout one to one, so a
checkpoint maps without reshaping beyond transposing Linear weights
(mtl_jax/pretrained/hf_bert.py):

  embeddings/{word,position,token_type}/embedding, embeddings/norm/{scale,bias}
  block_i/attention/{query,key,value,out}/{kernel,bias}, block_i/attention_norm
  block_i/intermediate, block_i/output, block_i/output_norm
  pooler/{kernel,bias}                              (only with ``pooler=True``)
  embeddings/task/embedding                         (only with ``task_embedding=N``)

Layers are ``block_0 .. block_{N-1}`` like every other trunk, so the transfer
strategies (freeze_bottom:N, layer decay, truncate:K through ``num_blocks``)
address them by regex. Inputs are a dict of [B, L] int arrays: ``input_ids``,
``attention_mask`` (1 = real token) and optional ``token_type_ids``; with
``task_embedding=N`` also ``task_id`` [B] (ERNIE 2.0's task embedding: one
learned vector per task id added beside the token, position and segment
embeddings, before the embedding LayerNorm).
"""

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.trunks import TRUNKS

POOLINGS = ("cls", "pooler", "mean", "none")
# HF ``hidden_act`` names: "gelu" is the exact erf GELU of the original BERT.
HIDDEN_ACTS = {"gelu": lambda x: nn.gelu(x, approximate=False),
               "gelu_new": lambda x: nn.gelu(x, approximate=True),
               "gelu_pytorch_tanh": lambda x: nn.gelu(x, approximate=True),
               "relu": nn.relu}


def _dense(features, dtype, init_std, name):
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32,
                  kernel_init=nn.initializers.normal(init_std), name=name)


def _norm(eps, dtype, name):
  return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=jnp.float32, name=name)


class Embeddings(nn.Module):
  vocab_size: int
  hidden_size: int
  max_position: int
  type_vocab_size: int
  dropout: float
  layer_norm_eps: float
  init_std: float
  dtype: Any
  num_tasks: int = 0

  @nn.compact
  def __call__(self, input_ids, token_type_ids, train: bool, task_id=None):
    length = input_ids.shape[1]
    init = nn.initializers.normal(self.init_std)
    emb = lambda n, name: nn.Embed(n, self.hidden_size, dtype=self.dtype,  # noqa: E731
                                   param_dtype=jnp.float32, embedding_init=init, name=name)
    x = (emb(self.vocab_size, "word")(input_ids)
         + emb(self.max_position, "position")(jnp.arange(length)[None, :])
         + emb(self.type_vocab_size, "token_type")(token_type_ids))
    if self.num_tasks:  # one vector per example, broadcast over its positions
      x = x + emb(self.num_tasks, "task")(task_id)[:, None, :]
    x = _norm(self.layer_norm_eps, self.dtype, "norm")(x)
    return nn.Dropout(self.dropout, deterministic=not train)(x)


class SelfAttention(nn.Module):
  hidden_size: int
  num_heads: int
  dropout: float
  init_std: float
  dtype: Any

  @nn.compact
  def __call__(self, x, bias, train: bool):
    b, l, d = x.shape
    h = self.num_heads
    split = lambda t: t.reshape(b, l, h, d // h)  # noqa: E731
    q = split(_dense(d, self.dtype, self.init_std, "query")(x))
    k = split(_dense(d, self.dtype, self.init_std, "key")(x))
    v = split(_dense(d, self.dtype, self.init_std, "value")(x))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // h).astype(self.dtype)
    # Softmax in float32: a bf16 softmax over long rows loses the small weights.
    probs = jax.nn.softmax(scores.astype(jnp.float32) + bias, axis=-1).astype(self.dtype)
    probs = nn.Dropout(self.dropout, deterministic=not train)(probs)
    ctx = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, d)
    return _dense(d, self.dtype, self.init_std, "out")(ctx)


class Block(nn.Module):
  """One post-LN layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
  hidden_size: int
  num_heads: int
  intermediate_size: int
  dropout: float
  attention_dropout: float
  hidden_act: str
  layer_norm_eps: float
  init_std: float
  dtype: Any

  @nn.compact
  def __call__(self, x, bias, train: bool):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    a = SelfAttention(self.hidden_size, self.num_heads, self.attention_dropout, self.init_std,
                      self.dtype, name="attention")(x, bias, train)
    x = _norm(self.layer_norm_eps, self.dtype, "attention_norm")(x + drop(a))
    y = _dense(self.intermediate_size, self.dtype, self.init_std, "intermediate")(x)
    y = HIDDEN_ACTS[self.hidden_act](y)
    y = _dense(self.hidden_size, self.dtype, self.init_std, "output")(y)
    return _norm(self.layer_norm_eps, self.dtype, "output_norm")(x + drop(y))


def _check_inputs(inputs, num_tasks):
  if not isinstance(inputs, Mapping):
    raise TypeError("bert trunk: inputs must be a dict with 'input_ids' and 'attention_mask' "
                    f"(and optionally 'token_type_ids') [B, L] int arrays, got {type(inputs)}")
  missing = [k for k in ("input_ids", "attention_mask") if k not in inputs]
  if missing:
    raise KeyError(f"bert trunk: inputs lack {missing}; got keys {sorted(inputs)}")
  ids = inputs["input_ids"]
  for k in ("attention_mask", "token_type_ids"):
    if k in inputs and inputs[k].shape != ids.shape:
      raise ValueError(f"bert trunk: {k} has shape {inputs[k].shape}, input_ids {ids.shape}")
  if num_tasks and "task_id" not in inputs:
    raise KeyError(f"bert trunk: task_embedding={num_tasks} needs inputs['task_id'] [B]; the "
                   f"data side adds it to datasets listed in config.datasets (each dataset's "
                   f"`task_id`, default its index); got keys {sorted(inputs)}")
  if not num_tasks and "task_id" in inputs:
    raise ValueError("bert trunk: inputs carry 'task_id' but the trunk has no task embedding; "
                     "set config.model.task_embedding to the number of task ids")
  if num_tasks and tuple(inputs["task_id"].shape) != tuple(ids.shape[:1]):
    raise ValueError(f"bert trunk: task_id must be [B] = {ids.shape[:1]}, got shape "
                     f"{inputs['task_id'].shape}")


@TRUNKS.register("bert")
class Bert(nn.Module):
  """BERT encoder. Output [B, D] (pooling cls/pooler/mean) or [B, L, D] (pooling="none").

  ``pooler`` adds BERT's tanh Dense on [CLS] (needed for pooling="pooler";
  a checkpoint without one loads into ``pooler=False``). ``dtype`` is the
  compute dtype (params stay float32); features come out float32.
  ``num_blocks`` keeps the first K blocks (transfer's truncate:K), -1 all.
  ``task_embedding`` is the number of task ids (0: none); set it through
  ``config.model.task_embedding``.
  """
  vocab_size: int = 30522
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  intermediate_size: int = 3072
  max_position: int = 512
  type_vocab_size: int = 2
  dropout: float = 0.1
  attention_dropout: float = -1.0  # -1: same as dropout
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  init_std: float = 0.02
  pooling: str = "cls"
  pooler: bool = True
  dtype: Any = "float32"
  num_blocks: int = -1
  task_embedding: int = 0

  def output_embedding(self):
    """The word-embedding table [V, D], for heads tied to it (masked_lm); call after __call__."""
    return self.variables["params"]["embeddings"]["word"]["embedding"]

  @nn.compact
  def __call__(self, inputs, train: bool = False):
    if self.pooling not in POOLINGS:
      raise ValueError(f"bert trunk: unknown pooling {self.pooling!r}; valid: {list(POOLINGS)}")
    if self.pooling == "pooler" and not self.pooler:
      raise ValueError("bert trunk: pooling='pooler' needs pooler=True")
    if self.hidden_act not in HIDDEN_ACTS:
      raise ValueError(f"bert trunk: unknown hidden_act {self.hidden_act!r}; "
                       f"valid: {sorted(HIDDEN_ACTS)}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"bert trunk: hidden_size {self.hidden_size} is not divisible by "
                       f"num_heads {self.num_heads}")
    n = self.num_layers if self.num_blocks < 0 else self.num_blocks
    if not 0 <= n <= self.num_layers:
      raise ValueError(f"bert trunk: num_blocks {self.num_blocks} not in [0, {self.num_layers}]")
    if self.task_embedding < 0:
      raise ValueError(f"bert trunk: task_embedding must be >= 0, got {self.task_embedding}")
    _check_inputs(inputs, self.task_embedding)
    ids = jnp.asarray(inputs["input_ids"], jnp.int32)
    if ids.ndim != 2:
      raise ValueError(f"bert trunk: input_ids must be [B, L], got shape {ids.shape}")
    if ids.shape[1] > self.max_position:
      raise ValueError(f"bert trunk: sequence length {ids.shape[1]} exceeds the position table "
                       f"(max_position={self.max_position})")
    mask = jnp.asarray(inputs["attention_mask"])
    types = inputs.get("token_type_ids")
    types = jnp.zeros_like(ids) if types is None else jnp.asarray(types, jnp.int32)
    dtype = jnp.dtype(self.dtype)
    attn_drop = self.dropout if self.attention_dropout < 0 else self.attention_dropout

    x = Embeddings(self.vocab_size, self.hidden_size, self.max_position, self.type_vocab_size,
                   self.dropout, self.layer_norm_eps, self.init_std, dtype,
                   self.task_embedding, name="embeddings")(
                       ids, types, train,
                       jnp.asarray(inputs["task_id"], jnp.int32) if self.task_embedding else None)
    # Additive key mask, float32 like the softmax (HF uses finfo.min as well).
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    for i in range(n):
      x = Block(self.hidden_size, self.num_heads, self.intermediate_size, self.dropout,
                attn_drop, self.hidden_act, self.layer_norm_eps, self.init_std, dtype,
                name=f"block_{i}")(x, bias, train)
    if self.pooler:  # created even when unused so a checkpoint's pooler has a place
      pooled = jnp.tanh(_dense(self.hidden_size, dtype, self.init_std, "pooler")(x[:, 0]))
    if self.pooling == "none":
      return x.astype(jnp.float32)
    if self.pooling == "cls":
      return x[:, 0].astype(jnp.float32)
    if self.pooling == "pooler":
      return pooled.astype(jnp.float32)
    m = mask.astype(jnp.float32)[..., None]
    return (x.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
