"""Hugging Face BERT-family checkpoint directories -> the ``bert`` trunk.

A directory holds ``config.json``, ``model.safetensors`` and ``tokenizer.json``.
Tensors are read with safetensors' numpy API and text with ``tokenizers``: no
PyTorch, no pickle. Every tensor name maps to one trunk parameter path
(Linear weights are [out, in] in PyTorch, so they are transposed); the load
fails listing every tensor it could not place, every trunk parameter left
unfilled and every shape that does not fit, rather than half-loading.
"""

import hashlib
import json
import os
import re
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

CONFIG, WEIGHTS, TOKENIZER = "config.json", "model.safetensors", "tokenizer.json"
MODEL_TYPES = ("bert",)
# Buffers, not parameters: known to have no place in the trunk.
IGNORED = r"(.*\.)?embeddings\.position_ids"
# Task heads of BertFor* checkpoints (MLM/NSP "cls.*", "classifier.*"): not trunk.
HEADS = r"(cls|classifier|qa_outputs)\..*"


class CheckpointLoadError(ValueError):
  """A checkpoint directory does not fit the trunk it describes."""


def is_hf_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, CONFIG)) and os.path.isfile(os.path.join(path, WEIGHTS))


def _require(path: str, names: Sequence[str]):
  if not os.path.isdir(path):
    raise FileNotFoundError(f"checkpoint directory {path} does not exist")
  missing = [n for n in names if not os.path.isfile(os.path.join(path, n))]
  if missing:
    raise FileNotFoundError(f"checkpoint directory {path} lacks {missing} (a Hugging Face "
                            f"BERT directory holds {CONFIG}, {WEIGHTS} and {TOKENIZER})")


def read_config(path: str) -> dict:
  _require(path, [CONFIG])
  with open(os.path.join(path, CONFIG)) as f:
    return json.load(f)


def trunk_config(path_or_config, pooling: str = "cls", dtype: str = "float32",
                 dropout: Optional[float] = None, pooler: Optional[bool] = None) -> dict:
  """The ``model.trunk`` dict for a checkpoint directory (or its parsed config.json).

  ``pooler`` defaults to whether the checkpoint has pooler weights (when a
  directory is given), else True; ``dropout`` defaults to the checkpoint's.
  """
  cfg = path_or_config if isinstance(path_or_config, dict) else read_config(path_or_config)
  model_type = cfg.get("model_type")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"unknown model_type {model_type!r} in {CONFIG}; this loader reads "
                     f"{list(MODEL_TYPES)}")
  pos = cfg.get("position_embedding_type", "absolute")
  if pos != "absolute":
    raise ValueError(f"position_embedding_type {pos!r} is not supported (only 'absolute')")
  if pooler is None:
    pooler = True
    if not isinstance(path_or_config, dict):
      pooler = any(n.endswith("pooler.dense.weight") for n in _tensor_names(path_or_config))
  hidden_dropout = cfg.get("hidden_dropout_prob", 0.1)
  return dict(
      name="bert", vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"],
      num_layers=cfg["num_hidden_layers"], num_heads=cfg["num_attention_heads"],
      intermediate_size=cfg["intermediate_size"], max_position=cfg["max_position_embeddings"],
      type_vocab_size=cfg.get("type_vocab_size", 2),
      dropout=hidden_dropout if dropout is None else dropout,
      attention_dropout=(cfg.get("attention_probs_dropout_prob", hidden_dropout)
                         if dropout is None else dropout),
      hidden_act=cfg.get("hidden_act", "gelu"), layer_norm_eps=cfg.get("layer_norm_eps", 1e-12),
      init_std=cfg.get("initializer_range", 0.02), pooling=pooling, pooler=pooler, dtype=dtype)


def _tensor_names(path: str):
  from safetensors import safe_open
  _require(path, [WEIGHTS])
  with safe_open(os.path.join(path, WEIGHTS), framework="numpy") as f:
    return list(f.keys())


_LAYER = {
    "attention.self.query": "attention/query", "attention.self.key": "attention/key",
    "attention.self.value": "attention/value", "attention.output.dense": "attention/out",
    "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "intermediate",
    "output.dense": "output", "output.LayerNorm": "output_norm",
}
_EMB = {"word_embeddings": "word", "position_embeddings": "position",
        "token_type_embeddings": "token_type", "LayerNorm": "norm"}
_LEAF = {"weight": "kernel", "bias": "bias", "gamma": "scale", "beta": "bias"}


def param_path(name: str) -> Optional[Tuple[str, bool]]:
  """(trunk parameter path, transpose?) of a checkpoint tensor name; None if it has no place."""
  name = re.sub(r"^(bert|model)\.", "", name)
  module, _, leaf = name.rpartition(".")
  if leaf not in _LEAF:
    return None
  m = re.fullmatch(r"embeddings\.(\w+)", module)
  if m and m.group(1) in _EMB:
    sub = _EMB[m.group(1)]
    if sub == "norm":
      return f"embeddings/norm/{'scale' if leaf in ('weight', 'gamma') else 'bias'}", False
    return (f"embeddings/{sub}/embedding", False) if leaf == "weight" else None
  m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", module)
  if m and m.group(2) in _LAYER:
    sub = _LAYER[m.group(2)]
    if sub.endswith("norm"):
      return f"block_{m.group(1)}/{sub}/{'scale' if leaf in ('weight', 'gamma') else 'bias'}", False
    return f"block_{m.group(1)}/{sub}/{_LEAF[leaf]}", leaf == "weight"
  if module == "pooler.dense":
    return f"pooler/{_LEAF[leaf]}", leaf == "weight"
  return None


def to_hf_tensors(params: dict) -> Dict[str, np.ndarray]:
  """The inverse of the load: trunk params -> ``BertModel`` tensor names (for export/tests)."""
  from flax import traverse_util
  inverse = {"embeddings/" + v: f"embeddings.{k}" for k, v in _EMB.items()}
  inverse.update({v: k for k, v in _LAYER.items()})
  out = {}
  for key, value in traverse_util.flatten_dict(params).items():
    path, value = "/".join(key), np.asarray(value, np.float32)
    module, leaf = path.rsplit("/", 1)
    block = re.fullmatch(r"block_(\d+)/(.+)", module)
    if block:
      prefix, module = f"encoder.layer.{block.group(1)}.", block.group(2)
    else:
      prefix = ""
    if module == "pooler":
      name = "pooler.dense"
    else:
      name = prefix + inverse[module]
    hf_leaf = {"kernel": "weight", "embedding": "weight", "scale": "weight", "bias": "bias"}[leaf]
    out[f"{name}.{hf_leaf}"] = value.T if leaf == "kernel" else value
  return out


def _expected_shapes(config: dict) -> Dict[str, Tuple[int, ...]]:
  """Every trunk parameter path -> shape, by abstract init (no compute)."""
  import jax
  from flax import traverse_util
  from mtl_jax.models.trunks import build_trunk
  length = min(8, config["max_position"])
  x = {"input_ids": np.zeros((1, length), np.int32),
       "attention_mask": np.ones((1, length), np.int32)}
  shapes = jax.eval_shape(build_trunk(config).init, jax.random.PRNGKey(0), x)["params"]
  return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(shapes).items()}


def to_params(tensors: Dict[str, np.ndarray], config: dict, source: str = "checkpoint",
              ignore: str = IGNORED + "|" + HEADS) -> Tuple[dict, dict]:
  """(nested trunk params, report) from checkpoint tensors for trunk ``config``.

  Raises CheckpointLoadError naming every tensor without a place (unless it
  matches ``ignore``), every trunk parameter left unfilled, and every shape
  mismatch (tensor name, checkpoint shape, model shape). ``report`` lists the
  ignored tensor names.
  """
  from flax import traverse_util
  expected = _expected_shapes(config)
  flat, sources, unplaced, ignored, mismatched, bad = {}, {}, [], [], [], set()
  for name in sorted(tensors):
    value = tensors[name]
    target = param_path(name)
    if target is None or target[0] not in expected:
      (ignored if re.fullmatch(ignore, name) else unplaced).append(
          f"{name} {tuple(value.shape)}")
      continue
    path, transpose = target
    value = np.asarray(value, np.float32)
    value = value.T if transpose else value
    if path in flat:
      unplaced.append(f"{name}: {path} is already filled by {sources[path]}")
    elif value.shape != expected[path]:
      mismatched.append(f"{name}: checkpoint {tuple(tensors[name].shape)}"
                        f"{' (transposed ' + str(value.shape) + ')' if transpose else ''}, "
                        f"model {path} {expected[path]}")
      bad.add(path)
    else:
      flat[path], sources[path] = value, name
  unfilled = [f"{p} {s}" for p, s in expected.items() if p not in flat and p not in bad]
  if unplaced or unfilled or mismatched:
    parts = []
    for title, items in (("tensors with no place in the trunk", unplaced),
                         ("shape mismatches", mismatched),
                         ("trunk parameters left unfilled", unfilled)):
      if items:
        parts.append(f"{title} ({len(items)}):\n    " + "\n    ".join(items))
    raise CheckpointLoadError(f"{source} does not fit trunk {config.get('name')!r}:\n  "
                              + "\n  ".join(parts))
  params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
  return params, {"ignored": ignored, "loaded": sorted(flat)}


def read_tensors(path: str) -> Dict[str, np.ndarray]:
  from safetensors.numpy import load_file
  _require(path, [WEIGHTS])
  return load_file(os.path.join(path, WEIGHTS))


def load_hf_bert(path: str, pooling: str = "cls", dtype: str = "float32",
                 dropout: Optional[float] = None, with_tokenizer: bool = True):
  """(trunk config, trunk params, tokenizer or None) from a checkpoint directory.

  The tokenizer's vocabulary must have the size of the embedding table.
  """
  _require(path, [CONFIG, WEIGHTS] + ([TOKENIZER] if with_tokenizer else []))
  tensors = read_tensors(path)
  pooler = any(n.endswith("pooler.dense.weight") for n in tensors)
  config = trunk_config(read_config(path), pooling=pooling, dtype=dtype, dropout=dropout,
                        pooler=pooler)
  params, _ = to_params(tensors, config, source=os.path.join(path, WEIGHTS))
  tok = load_tokenizer(path, vocab_size=config["vocab_size"]) if with_tokenizer else None
  return config, params, tok


def load_trunk_params(path: str) -> Dict[str, dict]:
  """``{"trunk": params}``: the layout ``config.init_from`` (partial_load) reads, plus
  ``{"heads": {"masked_lm_<V>": ...}}`` when the checkpoint holds an MLM head."""
  _require(path, [CONFIG, WEIGHTS])
  tensors = read_tensors(path)  # once: the trunk and the head come from the same file
  pooler = any(n.endswith("pooler.dense.weight") for n in tensors)
  params, _ = to_params(tensors, trunk_config(read_config(path), pooler=pooler),
                        source=os.path.join(path, WEIGHTS))
  out = {"trunk": params}
  head = mlm_head_params(tensors)
  if head is not None:
    out["heads"] = {mlm_head_key(params["embeddings"]["word"]["embedding"].shape[0]): head}
  return out


# --- the masked-LM head (BertForMaskedLM / BertForPreTraining ``cls.predictions.*``) ----

_MLM = {"transform.dense.weight": ("transform_kernel", True),
        "transform.dense.bias": ("transform_bias", False),
        "transform.LayerNorm.weight": ("norm_scale", False),
        "transform.LayerNorm.gamma": ("norm_scale", False),
        "transform.LayerNorm.bias": ("norm_bias", False),
        "transform.LayerNorm.beta": ("norm_bias", False),
        "bias": ("bias", False)}
_MLM_PREFIX = "cls.predictions."


def mlm_head_key(vocab_size: int) -> str:
  """The head group of one ``masked_lm`` task over ``vocab_size`` tokens (``heads/<key>``)."""
  return f"masked_lm_{vocab_size}"


def mlm_head_params(tensors: Dict[str, np.ndarray]) -> Optional[Dict[str, np.ndarray]]:
  """The MLM head (models/mlm_head.py layout, task axis of 1) from ``cls.predictions.*``
  tensors, or None when the checkpoint has none.

  The decoder must be tied: a ``cls.predictions.decoder.weight`` that differs
  from the word embeddings (or a decoder bias that differs from the bias) is
  an error, since the head has no untied decoder to hold it.
  """
  names = sorted(n for n in tensors if n.startswith(_MLM_PREFIX))
  if not names:
    return None
  head, unplaced = {}, []
  for name in names:
    rest = name[len(_MLM_PREFIX):]
    if rest in ("decoder.weight", "decoder.bias"):
      continue
    if rest not in _MLM:
      unplaced.append(name)
      continue
    key, transpose = _MLM[rest]
    value = np.asarray(tensors[name], np.float32)
    head[key] = (value.T if transpose else value)[None]
  missing = sorted({k for k, _ in _MLM.values()} - set(head))
  if unplaced or missing:
    raise CheckpointLoadError(f"MLM head ({_MLM_PREFIX}*): tensors with no place {unplaced}, "
                              f"head parameters left unfilled {missing}")
  word = next((tensors[n] for n in tensors if n.endswith("embeddings.word_embeddings.weight")),
              None)
  dec = tensors.get(_MLM_PREFIX + "decoder.weight")
  if dec is not None and (word is None or dec.shape != word.shape or not np.array_equal(dec, word)):
    raise CheckpointLoadError(f"{_MLM_PREFIX}decoder.weight differs from the word embeddings: "
                              "the masked_lm head ties its decoder to them and cannot hold an "
                              "untied one")
  dec_bias = tensors.get(_MLM_PREFIX + "decoder.bias")
  if dec_bias is not None and not np.array_equal(dec_bias, head["bias"][0]):
    raise CheckpointLoadError(f"{_MLM_PREFIX}decoder.bias differs from {_MLM_PREFIX}bias")
  return head


def to_hf_mlm_tensors(head: Dict[str, np.ndarray], row: int = 0) -> Dict[str, np.ndarray]:
  """Row ``row`` of a masked_lm head -> ``cls.predictions.*`` names (the decoder is tied)."""
  out = {}
  for rest, (key, transpose) in _MLM.items():
    if rest.endswith(("gamma", "beta")):
      continue
    value = np.asarray(head[key][row], np.float32)
    out[_MLM_PREFIX + rest] = value.T if transpose else value
  out[_MLM_PREFIX + "decoder.bias"] = out[_MLM_PREFIX + "bias"]
  return out


# --- tokenization -------------------------------------------------------------

def load_tokenizer(path: str, vocab_size: Optional[int] = None):
  """The directory's ``tokenizers.Tokenizer``; checks its size against ``vocab_size``.

  ``vocab_size`` defaults to config.json's (the embedding table's rows).
  """
  from tokenizers import Tokenizer
  _require(path, [TOKENIZER])
  tok = Tokenizer.from_file(os.path.join(path, TOKENIZER))
  if vocab_size is None and os.path.isfile(os.path.join(path, CONFIG)):
    vocab_size = read_config(path).get("vocab_size")
  n = tok.get_vocab_size(with_added_tokens=True)
  if vocab_size is not None and n != vocab_size:
    raise ValueError(f"{os.path.join(path, TOKENIZER)} has {n} tokens but the checkpoint's "
                     f"embedding table has {vocab_size} rows: tokenizer and weights do not match")
  return tok


def tokenizer_fingerprint(path: str) -> str:
  """sha256 of tokenizer.json: the cache key of tokenized splits."""
  _require(path, [TOKENIZER])
  with open(os.path.join(path, TOKENIZER), "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def _pad_id(tok) -> int:
  pad = tok.padding
  if pad is not None:
    return pad["pad_id"]
  for token in ("[PAD]", "<pad>"):
    i = tok.token_to_id(token)
    if i is not None:
      return i
  return 0


def tokenize(tok, texts: Sequence[str], pairs: Optional[Sequence[str]] = None,
             max_length: int = 128, max_position: Optional[int] = None) -> Dict[str, np.ndarray]:
  """{input_ids, attention_mask, token_type_ids}: int32 [N, max_length].

  Sentence pairs are truncated longest-first and padded on the right to
  ``max_length`` (static shapes for jit), as ``transformers`` does with
  ``padding="max_length", truncation=True``.
  """
  if max_position is not None and max_length > max_position:
    raise ValueError(f"max_length {max_length} exceeds the encoder's position table "
                     f"(max_position={max_position})")
  if pairs is not None and len(pairs) != len(texts):
    raise ValueError(f"{len(texts)} first sentences but {len(pairs)} second sentences")
  from tokenizers import Tokenizer
  tok = Tokenizer.from_str(tok.to_str())  # a copy: padding/truncation settings are state
  tok.enable_truncation(max_length, strategy="longest_first")
  tok.enable_padding(length=max_length, pad_id=_pad_id(tok),
                     pad_token=(tok.padding or {}).get("pad_token", "[PAD]"))
  batch = list(zip(texts, pairs)) if pairs is not None else list(texts)
  enc = tok.encode_batch(batch) if batch else []
  out = {k: np.zeros((len(enc), max_length), np.int32)
         for k in ("input_ids", "attention_mask", "token_type_ids")}
  for i, e in enumerate(enc):
    out["input_ids"][i] = e.ids
    out["attention_mask"][i] = e.attention_mask
    out["token_type_ids"][i] = e.type_ids
  return out
