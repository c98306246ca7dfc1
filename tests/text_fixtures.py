"""Generated Hugging Face-layout BERT directories and WordPiece tokenizers (no download)."""

import json
import os

import numpy as np

WORDS = ("the a an is was good bad movie film great terrible not very and of to it this that "
         "cat dog sat on mat man woman said what who where why how question answer yes no "
         "sentence pair first second ##s ##ed ##ing , . ! ?").split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY = dict(vocab_size=len(SPECIAL) + len(WORDS), hidden_size=16, num_hidden_layers=2,
            num_attention_heads=4, intermediate_size=32, max_position_embeddings=24,
            type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02,
            model_type="bert", position_embedding_type="absolute", pad_token_id=0)


def write_tokenizer(path: str, words=WORDS) -> str:
  """A BERT-style (lowercasing WordPiece, [CLS] A [SEP] B [SEP]) tokenizer.json."""
  from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
  vocab = {w: i for i, w in enumerate(SPECIAL + list(words))}
  tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
  tok.enable_padding(pad_id=0, pad_token="[PAD]")
  os.makedirs(path, exist_ok=True)
  tok.save(os.path.join(path, "tokenizer.json"))
  return path


def write_bert_dir(path: str, seed: int = 0, tensors=None, **overrides) -> str:
  """config.json + model.safetensors (random tiny BERT, HF names) + tokenizer.json."""
  import jax
  from safetensors.numpy import save_file
  from mtl_jax.models.trunks import build_trunk
  from mtl_jax.pretrained import hf_bert
  cfg = dict(TINY, **overrides)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(cfg, f)
  if tensors is None:
    trunk = build_trunk(hf_bert.trunk_config(cfg))
    x = {"input_ids": np.zeros((1, 4), np.int32), "attention_mask": np.ones((1, 4), np.int32)}
    params = trunk.init(jax.random.PRNGKey(seed), x)["params"]
    # Non-trivial LayerNorm and bias values, so a swapped or dropped tensor shows.
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(seed + 1),
                                                                a.shape), params)
    tensors = hf_bert.to_hf_tensors(params)
    tensors["embeddings.position_ids"] = np.arange(cfg["max_position_embeddings"])[None]
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
            os.path.join(path, "model.safetensors"))
  write_tokenizer(path)
  return path
