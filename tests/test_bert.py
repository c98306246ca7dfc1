"""The bert trunk on a tiny random config, and the HF-directory loader's errors (no download)."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import flat_params
from text_fixtures import TINY, write_bert_dir
from mtl_jax.models.trunks import build_trunk
from mtl_jax.pretrained import hf_bert

CFG = dict(name="bert", vocab_size=40, hidden_size=16, num_layers=2, num_heads=4,
           intermediate_size=32, max_position=16, dropout=0.0)


def _inputs(lengths, length=10, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(5, 40, (len(lengths), length)).astype(np.int32)
  mask = (np.arange(length)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  types = (np.arange(length)[None] >= 3).astype(np.int32).repeat(len(lengths), 0)
  return dict(input_ids=ids, attention_mask=mask, token_type_ids=types)


@pytest.fixture(scope="module")
def tiny():
  trunk = build_trunk(dict(CFG, pooling="none"))
  params = trunk.init(jax.random.PRNGKey(0), _inputs([10]))["params"]
  return params


def _apply(params, x, **kw):
  return np.asarray(build_trunk(dict(CFG, **kw)).apply({"params": params}, x))


def test_shapes_and_poolings_against_numpy(tiny):
  x = _inputs([10, 4, 1])
  tokens = _apply(tiny, x, pooling="none")
  assert tokens.shape == (3, 10, 16) and tokens.dtype == np.float32
  np.testing.assert_allclose(_apply(tiny, x, pooling="cls"), tokens[:, 0], atol=1e-6)
  m = x["attention_mask"][..., None]
  np.testing.assert_allclose(_apply(tiny, x, pooling="mean"), (tokens * m).sum(1) / m.sum(1),
                             atol=1e-5)
  w, b = np.asarray(tiny["pooler"]["kernel"]), np.asarray(tiny["pooler"]["bias"])
  np.testing.assert_allclose(_apply(tiny, x, pooling="pooler"), np.tanh(tokens[:, 0] @ w + b),
                             atol=1e-5)


def test_padding_does_not_change_real_tokens(tiny):
  short = _inputs([6], length=6, seed=1)
  padded = {k: np.concatenate([v, np.full((1, 5), 7 if k == "input_ids" else 0, np.int32)], 1)
            for k, v in short.items()}
  padded["input_ids"][0, 6:] = [3, 9, 11, 2, 30]  # arbitrary ids under the padding
  a = _apply(tiny, short, pooling="none")
  b = _apply(tiny, padded, pooling="none")
  np.testing.assert_allclose(b[:, :6], a, atol=1e-5)
  np.testing.assert_allclose(_apply(tiny, padded, pooling="mean"),
                             _apply(tiny, short, pooling="mean"), atol=1e-5)
  # The mask matters: attending to the padding changes the outputs.
  unmasked = dict(padded, attention_mask=np.ones_like(padded["attention_mask"]))
  assert np.abs(_apply(tiny, unmasked, pooling="none")[:, :6] - a).max() > 1e-3


def test_bfloat16_compute_is_close_and_truncation_keeps_lower_blocks(tiny):
  x = _inputs([10, 5])
  f32 = _apply(tiny, x, pooling="mean")
  bf16 = _apply(tiny, x, pooling="mean", dtype="bfloat16")
  assert bf16.dtype == np.float32
  assert np.abs(bf16 - f32).max() < 0.1 and not np.array_equal(bf16, f32)
  one = build_trunk(dict(CFG, pooling="none", num_blocks=1))
  v = one.init(jax.random.PRNGKey(0), x)["params"]
  assert "block_1" not in v and "block_0" in v
  sub = {k: tiny[k] for k in ("embeddings", "block_0", "pooler")}
  out = one.apply({"params": sub}, x)
  assert out.shape == (2, 10, 16)


def test_dropout_only_in_training(tiny):
  trunk = build_trunk(dict(CFG, dropout=0.5, pooling="mean"))
  x = _inputs([10, 5])
  a = trunk.apply({"params": tiny}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
  b = trunk.apply({"params": tiny}, x, train=True, rngs={"dropout": jax.random.PRNGKey(2)})
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
  np.testing.assert_allclose(trunk.apply({"params": tiny}, x), _apply(tiny, x, pooling="mean"),
                             atol=1e-6)


def test_trunk_input_errors(tiny):
  with pytest.raises(ValueError, match="sequence length 20 exceeds the position table"):
    _apply(tiny, _inputs([3], length=20), pooling="cls")
  with pytest.raises(KeyError, match="attention_mask"):
    _apply(tiny, {"input_ids": np.zeros((1, 4), np.int32)})
  with pytest.raises(ValueError, match="unknown pooling 'max'"):
    _apply(tiny, _inputs([3]), pooling="max")
  with pytest.raises(ValueError, match="unknown options"):
    build_trunk(dict(CFG, layers=3))


# --- loader ---------------------------------------------------------------------

@pytest.fixture
def hf_dir(tmp_path):
  return write_bert_dir(str(tmp_path / "tiny"))


def test_loader_round_trip_and_init_from_dispatch(hf_dir):
  from mtl_jax import partial_load
  config, params, tok = hf_bert.load_hf_bert(hf_dir, pooling="mean")
  assert config["num_layers"] == 2 and config["vocab_size"] == TINY["vocab_size"]
  assert tok.get_vocab_size() == TINY["vocab_size"]
  tensors = hf_bert.read_tensors(hf_dir)
  flat = flat_params(params)
  np.testing.assert_array_equal(flat["block_1/attention/query/kernel"],
                                tensors["encoder.layer.1.attention.self.query.weight"].T)
  np.testing.assert_array_equal(flat["embeddings/norm/scale"],
                                tensors["embeddings.LayerNorm.weight"])
  loaded = partial_load.load_checkpoint_params(hf_dir)
  assert set(loaded) == {"trunk/" + k for k in flat}
  np.testing.assert_array_equal(loaded["trunk/block_0/output/kernel"],
                                tensors["encoder.layer.0.output.dense.weight"].T)


def test_init_from_hf_dir_loads_the_whole_trunk_of_a_model(hf_dir):
  from mtl_jax import partial_load, tasks
  from mtl_jax.models import build_model
  specs = tasks.specs_from_config([dict(name="sentiment", kind="multiclass", num_outputs=3)])
  model = build_model(dict(sharing="hard", trunk=hf_bert.trunk_config(hf_dir)),
                      tasks.group_tasks(specs))
  x = {"input_ids": np.zeros((2, 8), np.int32), "attention_mask": np.ones((2, 8), np.int32)}
  fresh = model.init(jax.random.PRNGKey(3), x)["params"]
  merged, report = partial_load.merge_params(fresh, partial_load.load_checkpoint_params(hf_dir),
                                             load="trunk/.*")
  assert report["loaded"] and all(p.startswith("trunk/") for p in report["loaded"])
  assert all(not p.startswith("trunk/") for p in report["fresh"]) and not report["unused"]
  out = model.apply({"params": merged}, x)
  assert [v.shape for v in out.values()] == [(1, 2, 3)]  # [tasks, batch, classes]


def _rewrite(hf_dir, edit):
  from safetensors.numpy import save_file
  tensors = hf_bert.read_tensors(hf_dir)
  edit(tensors)
  save_file(tensors, os.path.join(hf_dir, "model.safetensors"))


def test_loader_names_unplaced_unfilled_and_mismatched_tensors(hf_dir):
  def edit(t):
    t["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((2, 2), np.float32)
    del t["encoder.layer.1.output.LayerNorm.bias"]
    t["encoder.layer.0.intermediate.dense.weight"] = np.zeros((31, 16), np.float32)
  _rewrite(hf_dir, edit)
  with pytest.raises(hf_bert.CheckpointLoadError) as e:
    hf_bert.load_hf_bert(hf_dir)
  msg = str(e.value)
  assert "encoder.layer.0.attention.self.rotary.weight (2, 2)" in msg
  assert "block_1/output_norm/bias (16,)" in msg and "left unfilled (1)" in msg
  assert ("encoder.layer.0.intermediate.dense.weight: checkpoint (31, 16) (transposed (16, 31)),"
          " model block_0/intermediate/kernel (16, 32)") in msg


def test_loader_ignores_heads_and_buffers_and_reads_prefixed_names(hf_dir):
  def edit(t):
    for k in list(t):
      t["bert." + k] = t.pop(k)
    t["cls.predictions.bias"] = np.zeros(TINY["vocab_size"], np.float32)
  _rewrite(hf_dir, edit)
  _, params, _ = hf_bert.load_hf_bert(hf_dir)
  assert "pooler" in params


def test_loader_file_and_config_errors(hf_dir, tmp_path):
  os.remove(os.path.join(hf_dir, "tokenizer.json"))
  with pytest.raises(FileNotFoundError, match=r"lacks \['tokenizer.json'\]"):
    hf_bert.load_hf_bert(hf_dir)
  hf_bert.load_hf_bert(hf_dir, with_tokenizer=False)  # weights alone are fine
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hf_bert.load_hf_bert(str(tmp_path / "nowhere"))
  other = write_bert_dir(str(tmp_path / "gpt"))
  with open(os.path.join(other, "config.json"), "w") as f:
    json.dump(dict(TINY, model_type="gpt2"), f)
  with pytest.raises(ValueError, match=r"unknown model_type 'gpt2'.*\['bert'\]"):
    hf_bert.load_hf_bert(other)


def test_tokenizer_vocab_must_match_embedding_table(tmp_path):
  d = write_bert_dir(str(tmp_path / "big"), vocab_size=TINY["vocab_size"] + 3)
  n = TINY["vocab_size"]
  with pytest.raises(ValueError, match=f"has {n} tokens but the checkpoint's embedding table "
                                       f"has {n + 3} rows"):
    hf_bert.load_hf_bert(d)


def test_tokenize_pairs_and_length_limit(hf_dir):
  tok = hf_bert.load_tokenizer(hf_dir)
  # 3 + 3 words + 3 special tokens > 8: longest-first truncation takes one word off a tie's
  # first sentence (what tokenizers and transformers do).
  out = hf_bert.tokenize(tok, ["The cat sat", "good"], ["on the mat", "bad movie"], max_length=8)
  assert {k: v.dtype for k, v in out.items()} == {k: np.int32 for k in out}
  vocab = tok.get_vocab()
  w = lambda *ws: [vocab[x] for x in ws]  # noqa: E731
  np.testing.assert_array_equal(
      out["input_ids"][0], w("[CLS]", "the", "cat", "[SEP]", "on", "the", "mat", "[SEP]"))
  np.testing.assert_array_equal(out["token_type_ids"][0], [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(out["input_ids"][1], w("[CLS]", "good", "[SEP]", "bad", "movie",
                                                       "[SEP]", "[PAD]", "[PAD]"))
  np.testing.assert_array_equal(out["attention_mask"][1], [1, 1, 1, 1, 1, 1, 0, 0])
  with pytest.raises(ValueError, match="max_length 30 exceeds the encoder's position table"):
    hf_bert.tokenize(tok, ["a"], max_length=30, max_position=24)
  with open(os.path.join(hf_dir, "config.json")) as f:
    assert json.load(f)["max_position_embeddings"] == 24
