"""masked_lm: BERT masking statistics, the gathered tied head and its loss vs a NumPy oracle,
streamed metrics, the cls.predictions loader and errors (training: test_mlm_end_to_end.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from text_fixtures import TINY, write_bert_dir
from mtl_jax import losses
from mtl_jax.data import build_dataset, mlm_masking
from mtl_jax.kinds.base import LabelError
from mtl_jax.models import build_model
from mtl_jax.models.trunks import build_trunk
from mtl_jax.pretrained import hf_bert
from mtl_jax.tasks import group_tasks, specs_from_config, validate_labels

V = TINY["vocab_size"]
SPECIAL = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK] in text_fixtures
TEXT = ("The cat sat on the mat. The dog is very good!\n\n"
        "A man said what? A woman said yes. This film is not bad.\n\n"
        "It was a great movie and the dog liked it. The cat said no.\n\n") * 12


def _binomial_ok(count, n, p, sigmas=4.0):
  return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
  return write_bert_dir(str(tmp_path_factory.mktemp("hf")), seed=1)


@pytest.fixture(scope="module")
def corpus(hf_dir, tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "text.txt"
  path.write_text(TEXT)
  return str(path)


@pytest.fixture(scope="module")
def splits(hf_dir, corpus):
  return build_dataset(dict(name="text_corpus", path=corpus, tokenizer=hf_dir, max_length=16,
                            max_predictions=4, whole_word=True, dupe_factor=2, seed=0))


@pytest.fixture(scope="module")
def synthetic():
  """4000 rows of random ids, random lengths: [CLS] ... [SEP] pad; ids 50.. are ## tokens."""
  rng = np.random.default_rng(0)
  n, length = 4000, 24
  ids = rng.integers(5, V, (n, length)).astype(np.int32)
  lengths = rng.integers(4, length + 1, n)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids[:, 0] = 2
  ids[np.arange(n), lengths - 1] = 3
  ids[mask == 0] = 0
  continuation = np.zeros(V, bool)
  continuation[50:] = True
  return ids, mask, continuation


def test_selection_rate_and_80_10_10_within_binomial_bounds(synthetic):
  ids, att, _ = synthetic
  out = mlm_masking.mask_sequences(ids, att, SPECIAL, 4, V, seed=[0, 0], max_predictions=24)
  cand = (att > 0) & ~np.isin(ids, SPECIAL)
  want = np.minimum(24, np.maximum(1, np.round(cand.sum(1) * 0.15))).astype(int)
  assert np.array_equal(out["weights"].sum(1), want)  # BERT's count per sequence
  selected = np.zeros_like(cand)
  rows = np.repeat(np.arange(len(ids)), out["weights"].sum(1))
  selected[rows, out["positions"][out["weights"]]] = True
  assert not (selected & ~cand).any()  # specials and padding never selected
  # Each candidate position is equally likely: per-position rates within binomial bounds.
  for j in range(1, 20):
    rate = want / cand.sum(1)
    n_j = cand[:, j].sum()
    assert _binomial_ok(selected[:, j].sum(), n_j, float(rate[cand[:, j]].mean())), j
  act = out["action"][out["weights"]]
  n = act.size
  for a, p in ((0, 0.8), (1, 0.1), (2, 0.1)):
    assert _binomial_ok((act == a).sum(), n, p), (a, (act == a).sum(), n)
  pos, tgt, w = out["positions"], out["targets"], out["weights"]
  r = np.arange(len(ids))[:, None]
  assert np.array_equal(tgt[w], ids[r, pos][w])  # targets are the original ids
  new = out["input_ids"][r, pos]
  assert np.all(new[w][act == 0] == 4)
  assert np.array_equal(new[w][act == 2], tgt[w][act == 2])
  assert not np.isin(new[w][act == 1], SPECIAL).any()
  assert len(np.unique(new[w][act == 1])) > 0.9 * (V - len(SPECIAL))  # drawn from the vocab
  untouched = ~selected
  assert np.array_equal(out["input_ids"][untouched], ids[untouched])
  assert np.all((np.diff(pos, axis=1) > 0) | ~w[:, 1:])  # used slots first, sorted, distinct
  assert np.all(w[:, :-1] | ~w[:, 1:])
  again = mlm_masking.mask_sequences(ids, att, SPECIAL, 4, V, seed=[0, 0], max_predictions=24)
  assert all(np.array_equal(out[k], again[k]) for k in out)
  other = mlm_masking.mask_sequences(ids, att, SPECIAL, 4, V, seed=[0, 1], max_predictions=24)
  assert not np.array_equal(out["positions"], other["positions"])


def test_whole_word_masking_selects_whole_words(synthetic):
  ids, att, cont = synthetic
  out = mlm_masking.mask_sequences(ids, att, SPECIAL, 4, V, seed=1, max_predictions=6,
                                   whole_word=True, continuation=cont)
  cand = (att > 0) & ~np.isin(ids, SPECIAL)
  checked = 0
  for r in range(500):
    chosen = set(out["positions"][r][out["weights"][r]].tolist())
    assert len(chosen) <= min(6, max(1, round(cand[r].sum() * 0.15)))
    for g in mlm_masking.word_groups(ids[r], cand[r], cont):
      inside = [i in chosen for i in g]
      assert all(inside) or not any(inside), (r, g, chosen)
      checked += len(g) > 1 and all(inside)
  assert checked > 20  # multi-token words were selected, whole


def test_units_are_selected_whole(synthetic):
  """Caller-defined units (ERNIE's phrases): spans of 3 positions, position 1 excluded."""
  ids, att, _ = synthetic
  units = np.broadcast_to(np.arange(ids.shape[1]) // 3, ids.shape).copy()
  units[:, 1] = -1
  out = mlm_masking.mask_sequences(ids, att, SPECIAL, 4, V, seed=2, max_predictions=6,
                                   units=units)
  cand = (att > 0) & ~np.isin(ids, SPECIAL)
  whole = 0
  for r in range(500):
    chosen = set(out["positions"][r][out["weights"][r]].tolist())
    assert 1 not in chosen
    for g in mlm_masking.unit_groups(units[r], cand[r]):
      inside = [i in chosen for i in g]
      assert all(inside) or not any(inside)
      whole += len(g) == 3 and all(inside)
  assert whole > 50
  with pytest.raises(ValueError, match="not both"):
    mlm_masking.mask_sequences(ids, att, SPECIAL, 4, V, 0, whole_word=True,
                               continuation=np.zeros(V, bool), units=units)


def test_text_corpus_dataset(splits, hf_dir, corpus):
  train_split, val = splits.train, splits.validation
  n_val = len(val)
  assert len(train_split) % 2 == 0 and n_val > 0 and len(splits.test) > 0
  x = train_split.inputs
  half = len(train_split) // 2
  assert np.array_equal(x["attention_mask"][:half], x["attention_mask"][half:])
  assert not np.array_equal(x[mlm_masking.POSITIONS][:half], x[mlm_masking.POSITIONS][half:])
  w, pos = train_split.mask["mlm"], x[mlm_masking.POSITIONS]
  ids = x["input_ids"][np.arange(len(pos))[:, None], pos]
  assert not np.isin(train_split.labels["mlm"][w], SPECIAL).any()
  assert np.mean(ids[w] == 4) > 0.6  # mostly [MASK]
  specs = specs_from_config([dict(name="mlm", kind="masked_lm", num_outputs=V)])
  validate_labels(specs[0], val.labels["mlm"], val.mask["mlm"], val.inputs)
  kw = dict(name="text_corpus", path=corpus, tokenizer=hf_dir, max_length=16, max_predictions=4,
            whole_word=True, dupe_factor=2)
  again = build_dataset(dict(kw, seed=0))
  assert np.array_equal(again.train.inputs["input_ids"], x["input_ids"])  # deterministic
  assert not np.array_equal(build_dataset(dict(kw, seed=1)).validation.inputs["input_ids"],
                            val.inputs["input_ids"])
  with pytest.raises(ValueError, match="validation > 0"):
    build_dataset(dict(kw, fractions=(0.9, 0.0, 0.1)))


@pytest.fixture(scope="module")
def model(hf_dir, splits):
  specs = specs_from_config([dict(name="mlm", kind="masked_lm", num_outputs=V)])
  groups = group_tasks(specs)
  m = build_model(dict(sharing="hard", trunk=hf_bert.trunk_config(hf_dir, pooling="none",
                                                                  dropout=0.0)), groups)
  batch = splits.train.take(np.arange(6))
  params = m.init(jax.random.PRNGKey(0), batch["inputs"])["params"]
  # Non-trivial head values, so a swapped or dropped parameter shows.
  params["heads"] = jax.tree.map(
      lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(2), a.shape), params["heads"])
  return m, specs, groups, params, batch


def _erf_gelu(x):
  return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _oracle_logits(hidden, positions, head, table, eps=1e-12):
  """NumPy float64: gather, dense, erf GELU, LayerNorm, tied decoder + bias (task row 0)."""
  h = np.take_along_axis(hidden.astype(np.float64), positions[..., None], axis=1)
  h = _erf_gelu(h @ head["transform_kernel"][0] + head["transform_bias"][0])
  mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
  h = (h - mu) / np.sqrt(var + eps) * head["norm_scale"][0] + head["norm_bias"][0]
  return h @ np.asarray(table, np.float64).T + head["bias"][0]


def test_logits_and_loss_match_numpy_oracle(model, hf_dir):
  m, specs, groups, params, batch = model
  x = batch["inputs"]
  out = np.asarray(m.apply({"params": params}, x)["masked_lm_%d" % V])
  trunk = build_trunk(hf_bert.trunk_config(hf_dir, pooling="none", dropout=0.0))
  hidden = np.asarray(trunk.apply({"params": params["trunk"]}, x))
  head = jax.tree.map(np.asarray, params["heads"]["masked_lm_%d" % V])
  table = params["trunk"]["embeddings"]["word"]["embedding"]
  want = _oracle_logits(hidden, x[mlm_masking.POSITIONS], head, table)
  np.testing.assert_allclose(out[0], want, atol=2e-5, rtol=1e-5)
  y, w = batch["labels"]["mlm"], batch["mask"]["mlm"]
  logp = want - np.log(np.exp(want - want.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - want.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
  loss = float(losses.task_losses(specs, groups, {"masked_lm_%d" % V: jnp.asarray(out)},
                                  batch["labels"], batch["mask"])[0])
  np.testing.assert_allclose(loss, nll[w].mean(), rtol=1e-5)


def test_gather_equals_full_vocabulary_logits_at_the_positions(model):
  """Projecting every position and then picking the masked ones gives the same logits."""
  m, _, _, params, batch = model
  x = dict(batch["inputs"])
  length = x["input_ids"].shape[1]
  full_x = dict(x, **{mlm_masking.POSITIONS: np.tile(np.arange(length), (len(x["input_ids"]), 1))})
  full = np.asarray(m.apply({"params": params}, full_x)["masked_lm_%d" % V][0])  # [B, L, V]
  gathered = np.asarray(m.apply({"params": params}, x)["masked_lm_%d" % V][0])
  pos = x[mlm_masking.POSITIONS]
  np.testing.assert_allclose(gathered, full[np.arange(len(pos))[:, None], pos], atol=1e-5)


def test_decoder_is_tied_to_the_word_embeddings(model, hf_dir):
  """The head has no decoder matrix: editing the trunk's word embeddings of tokens absent
  from the inputs changes exactly those logits, as the oracle says."""
  m, _, _, params, batch = model
  x = batch["inputs"]
  assert set(params["heads"]["masked_lm_%d" % V]) == {
      "transform_kernel", "transform_bias", "norm_scale", "norm_bias", "bias"}
  unused = np.setdiff1d(np.arange(V), x["input_ids"])
  table = np.array(params["trunk"]["embeddings"]["word"]["embedding"])
  table[unused] += np.random.default_rng(0).normal(size=(len(unused), table.shape[1]))
  edited = dict(params, trunk=jax.tree.map(lambda a: a, params["trunk"]))
  edited["trunk"]["embeddings"]["word"]["embedding"] = jnp.asarray(table)
  before = np.asarray(m.apply({"params": params}, x)["masked_lm_%d" % V][0])
  after = np.asarray(m.apply({"params": edited}, x)["masked_lm_%d" % V][0])
  changed = np.abs(after - before).max((0, 1)) > 1e-6
  assert np.array_equal(np.flatnonzero(changed), unused)
  trunk = build_trunk(hf_bert.trunk_config(hf_dir, pooling="none", dropout=0.0))
  hidden = np.asarray(trunk.apply({"params": edited["trunk"]}, x))
  head = jax.tree.map(np.asarray, params["heads"]["masked_lm_%d" % V])
  np.testing.assert_allclose(after, _oracle_logits(hidden, x[mlm_masking.POSITIONS], head, table),
                             atol=2e-5, rtol=1e-5)


def test_streamed_metrics_equal_the_whole_split(model):
  m, specs, groups, params, batch = model
  spec, kind = specs[0], specs[0].task_kind
  out = np.asarray(m.apply({"params": params}, batch["inputs"])["masked_lm_%d" % V][0])
  y, w = batch["labels"]["mlm"], batch["mask"]["mlm"]
  whole = kind.metrics(spec, out, y, w)
  from mtl_jax.kinds.base import add_sums
  sums = add_sums(kind.labelled_sums(spec, out[:2], y[:2], w[:2]),
                  kind.labelled_sums(spec, out[2:], y[2:], w[2:]))
  streamed = kind.metrics_of_sums(spec, sums)
  o = out[w].astype(np.float64)
  nll = -(o[np.arange(len(o)), y[w]] - (np.log(np.exp(o - o.max(1, keepdims=True)).sum(1))
                                        + o.max(1)))
  for got in (whole, streamed):
    np.testing.assert_allclose(got["loss"], nll.mean(), rtol=1e-9)
    np.testing.assert_allclose(got["perplexity"], np.exp(nll.mean()), rtol=1e-9)
    np.testing.assert_allclose(got["accuracy"], np.mean(o.argmax(1) == y[w]))
    assert got["count"] == len(y)


def test_cls_predictions_load_and_round_trip(model, tmp_path, hf_dir):
  _, _, _, params, _ = model
  head = jax.tree.map(np.asarray, params["heads"]["masked_lm_%d" % V])
  tensors = hf_bert.to_hf_tensors(params["trunk"])
  tensors.update(hf_bert.to_hf_mlm_tensors(head))
  back = hf_bert.mlm_head_params(tensors)
  assert all(np.array_equal(back[k], head[k]) for k in head)
  tensors["cls.predictions.decoder.weight"] = tensors["embeddings.word_embeddings.weight"]
  assert hf_bert.mlm_head_params(tensors) is not None
  d = write_bert_dir(str(tmp_path / "mlm"), tensors=tensors)
  loaded = hf_bert.load_trunk_params(d)
  assert set(loaded["heads"]) == {"masked_lm_%d" % V}
  assert all(np.array_equal(loaded["heads"]["masked_lm_%d" % V][k], head[k]) for k in head)
  assert "heads" not in hf_bert.load_trunk_params(hf_dir)  # no cls.* in that checkpoint
  # config.init_from = dict(workdir=<dir>, load="trunk/.*|heads/masked_lm_.*") takes the head.
  from mtl_jax import partial_load
  fresh = jax.tree.map(np.zeros_like, params)
  merged, report = partial_load.merge_params(fresh, partial_load.load_checkpoint_params(d),
                                             load="trunk/.*|heads/masked_lm_.*")
  assert not report["fresh"]
  assert all(np.array_equal(merged["heads"]["masked_lm_%d" % V][k], head[k]) for k in head)
  untied = dict(tensors, **{"cls.predictions.decoder.weight":
                            tensors["embeddings.word_embeddings.weight"] + 1})
  with pytest.raises(hf_bert.CheckpointLoadError, match="untied"):
    hf_bert.mlm_head_params(untied)
  partial = {k: v for k, v in tensors.items() if "LayerNorm" not in k or "cls" not in k}
  with pytest.raises(hf_bert.CheckpointLoadError, match="norm_bias"):
    hf_bert.mlm_head_params(partial)


def test_errors(model, hf_dir, splits):
  m, specs, groups, params, batch = model
  spec = specs[0]
  x, y, w = batch["inputs"], batch["labels"]["mlm"], batch["mask"]["mlm"]
  no_pos = {k: v for k, v in x.items() if k != mlm_masking.POSITIONS}
  with pytest.raises(LabelError, match="masked_lm_positions"):
    validate_labels(spec, y, w, no_pos)
  with pytest.raises(LabelError, match="shape"):
    validate_labels(spec, y, w, dict(x, **{mlm_masking.POSITIONS: x[mlm_masking.POSITIONS][:, :2]}))
  with pytest.raises(LabelError, match="outside the sequence"):
    validate_labels(spec, y, w, dict(x, **{mlm_masking.POSITIONS: x[mlm_masking.POSITIONS] + 99}))
  with pytest.raises(LabelError, match="outside the classes"):
    validate_labels(spec, np.where(w, V + 3, y), w, x)
  trunk = hf_bert.trunk_config(hf_dir, pooling="none")
  with pytest.raises(ValueError, match="vocabulary"):
    bad = specs_from_config([dict(name="mlm", kind="masked_lm", num_outputs=V + 1)])
    build_model(dict(sharing="hard", trunk=trunk), group_tasks(bad)).init(
        jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="pooling='none'"):
    build_model(dict(sharing="hard", trunk=dict(trunk, pooling="cls")), groups).init(
        jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="only sharing='hard'"):
    build_model(dict(sharing="single_task", trunk=trunk), groups).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="no place"):
    build_model(dict(sharing="pooled", trunk=trunk), groups).init(jax.random.PRNGKey(0), x)
  with pytest.raises(ValueError, match="has none"):
    build_model(dict(sharing="hard", trunk=dict(name="mlp", features=(8,))), groups).init(
        jax.random.PRNGKey(0), np.zeros((2, 3), np.float32))
  with pytest.raises(ValueError, match="mask rate"):
    mlm_masking.mask_sequences(x["input_ids"], x["attention_mask"], SPECIAL, 4, V, 0, rate=0.0)
  with pytest.raises(ValueError, match="continuation"):
    mlm_masking.mask_sequences(x["input_ids"], x["attention_mask"], SPECIAL, 4, V, 0,
                               whole_word=True)


def test_per_task_feature_copies_give_the_same_logits(model):
  """The representation-gradient path (MGDA-UB: per-task copies of the features through
  ColumnHeads) runs the masked_lm head on [T, B, L, D] features, with the same result."""
  from mtl_jax.models.sharing import variables, zero_perturbations
  m, _, _, params, batch = model
  x = batch["inputs"]
  z = zero_perturbations(m, x, params, num_tasks=1)
  assert "task_features" in z
  plain = np.asarray(m.apply({"params": params}, x)["masked_lm_%d" % V])
  copies = np.asarray(m.apply(variables(params, z), x)["masked_lm_%d" % V])
  np.testing.assert_allclose(copies, plain, atol=1e-6)
