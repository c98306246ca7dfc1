"""The ranking kind: listwise softmax loss, MRR and NDCG@k against independent oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses, metrics, tasks
from mtl_jax.tasks import LabelError, TaskSpec

RNG = np.random.default_rng(7)
B, C = 24, 6


def _queries(ties=False):
  """Scores [B, C, 1], graded relevance [B, C] and a candidate mask [B, C] with
  1..C valid candidates per query and at least one relevant among them."""
  n_valid = RNG.integers(1, C + 1, B)
  valid = np.arange(C)[None, :] < n_valid[:, None]
  rel = RNG.integers(0, 4, (B, C)).astype(np.float32)
  rel[np.arange(B), RNG.integers(0, n_valid)] = RNG.integers(1, 4, B)  # one relevant at least
  rel[~valid] = np.nan  # placeholders under the mask
  scores = RNG.normal(size=(B, C, 1))
  if ties:
    scores = np.round(scores, 0)
  return scores.astype(np.float32), rel, valid


def _listnet_reference(scores, rel, valid):
  """Mean over queries of -sum p_i log q_i, p = rel / sum rel, q = softmax(s), valid only."""
  out = []
  for s, r, v in zip(scores[..., 0].astype(np.float64), rel, valid):
    if not v.any() or np.nansum(r[v]) <= 0:
      continue
    p = r[v] / r[v].sum()
    log_q = s[v] - np.log(np.exp(s[v]).sum())
    out.append(-(p * log_q).sum())
  return np.mean(out) if out else 0.0


def _mrr_reference(scores, rel, valid):
  """Sorts each query's candidates by (-score, relevant): ties put non-relevant first."""
  rr = []
  for s, r, v in zip(scores[..., 0], rel, valid):
    cands = sorted((-s[j], r[j] > 0, j) for j in np.flatnonzero(v))
    rr.append(1.0 / (1 + [c[1] for c in cands].index(True)))
  return np.mean(rr)


def _ndcg_reference(scores, rel, valid, k):
  """Distinct scores: sort, DCG = sum_{i<k} rel_i / log2(i + 2), over the ideal DCG."""
  out = []
  for s, r, v in zip(scores[..., 0], rel, valid):
    s, r = s[v], r[v].astype(np.float64)
    disc = 1 / np.log2(np.arange(len(r)) + 2.0)
    dcg = (r[np.argsort(-s)] * disc)[:k].sum()
    out.append(dcg / (np.sort(r)[::-1] * disc)[:k].sum())
  return np.mean(out)


def test_listwise_loss_matches_reference():
  scores, rel, valid = _queries()
  spec = TaskSpec("r", "ranking")
  got = losses.task_loss(spec, jnp.asarray(scores), jnp.asarray(rel), jnp.asarray(valid))
  np.testing.assert_allclose(float(got), _listnet_reference(scores, rel, valid), rtol=1e-5)
  # The NumPy twin reported as the eval "loss" agrees.
  r = metrics.task_metrics(spec, scores, rel, valid)
  np.testing.assert_allclose(r["loss"], _listnet_reference(scores, rel, valid), rtol=1e-5)
  # One relevant candidate: the loss is the cross-entropy of picking it.
  one = np.zeros((1, C), np.float32)
  one[0, 2] = 1.0
  s = scores[:1]
  ce = -jax.nn.log_softmax(s[0, :, 0])[2]
  np.testing.assert_allclose(float(losses.task_loss(spec, s, one, np.ones((1, C), bool))),
                             float(ce), rtol=1e-6)


def test_queries_without_candidates_or_relevance_add_nothing_and_grads_stay_finite():
  scores, rel, valid = _queries()
  scores[~valid] = np.nan  # padded candidates may score NaN: never read
  valid[0] = False  # no candidate: an unlabelled example
  rel[1][valid[1]] = 0.0  # no relevant candidate (validation rejects it; the loss skips it)
  spec = TaskSpec("r", "ranking")
  f = lambda o: losses.task_loss(spec, o, jnp.asarray(rel), jnp.asarray(valid))  # noqa: E731
  got = f(jnp.asarray(scores))
  np.testing.assert_allclose(float(got), _listnet_reference(scores[2:], rel[2:], valid[2:]),
                             rtol=1e-5)
  g = np.asarray(jax.grad(f)(jnp.asarray(scores)))
  assert np.all(np.isfinite(g))
  assert np.all(g[~valid] == 0.0) and np.all(g[:2] == 0.0)
  # All masked: exactly 0 with a zero gradient.
  none = jnp.zeros((B, C), bool)
  h = lambda o: losses.task_loss(spec, o, jnp.asarray(rel), none)  # noqa: E731
  assert float(h(jnp.asarray(scores))) == 0.0
  assert np.all(np.asarray(jax.grad(h)(jnp.asarray(scores))) == 0.0)


def test_mrr_and_ndcg_match_references():
  scores, rel, valid = _queries()
  spec = TaskSpec("r", "ranking", metrics=("mrr", "ndcg@1", "ndcg@3", "ndcg"))
  r = metrics.task_metrics(spec, scores, rel, valid)
  assert r["count"] == B
  np.testing.assert_allclose(r["mrr"], _mrr_reference(scores, rel, valid))
  for k, name in [(1, "ndcg@1"), (3, "ndcg@3"), (C, "ndcg")]:
    np.testing.assert_allclose(r[name], _ndcg_reference(scores, rel, valid, k))


def test_mrr_ties_are_pessimistic_by_hand():
  spec = TaskSpec("r", "ranking", metrics=("mrr",))
  s = np.array([[[1.0], [1.0], [1.0], [0.0]]])
  rel = np.array([[0.0, 1.0, 0.0, 0.0]])
  # The relevant candidate ties with two others: ranked after both.
  assert metrics.task_metrics(spec, s, rel, np.ones((1, 4), bool))["mrr"] == pytest.approx(1 / 3)
  # A padded candidate never counts, even with a higher score.
  s2 = np.array([[[5.0], [1.0], [0.5], [0.0]]])
  m = np.array([[False, True, True, True]])
  assert metrics.task_metrics(spec, s2, rel, m)["mrr"] == 1.0


def test_ndcg_matches_sklearn_with_ties():
  sk = pytest.importorskip("sklearn.metrics")
  scores, rel, valid = _queries(ties=True)
  keep = valid.sum(1) >= 2  # sklearn refuses one-candidate queries (our NDCG is 1 there)
  scores, rel, valid = scores[keep], rel[keep], valid[keep]
  for k in (1, 3, None):
    name = f"ndcg@{k}" if k else "ndcg"
    got = metrics.task_metrics(TaskSpec("r", "ranking", metrics=(name,)), scores, rel, valid)[name]
    want = np.mean([sk.ndcg_score(r[v][None], s[v, 0][None], k=k)
                    for s, r, v in zip(scores, rel, valid)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


def test_ranking_validation_names_the_query():
  spec = TaskSpec("r", "ranking")
  scores, rel, valid = _queries()
  tasks.validate_labels(spec, rel, valid)  # NaN placeholders under the mask are fine
  bad = rel.copy()
  bad[3][valid[3]] = 0.0
  with pytest.raises(LabelError, match=r"task 'r' \(ranking\): 1 queries have candidates but "
                                       r"none is relevant.*first at example 3.*mask it out"):
    tasks.validate_labels(spec, bad, valid)
  # Masking it out is the documented fix: no candidate = unlabelled example.
  m = valid.copy()
  m[3] = False
  tasks.validate_labels(spec, bad, m)
  neg = rel.copy()
  neg[5, 0] = -1.0
  with pytest.raises(LabelError, match="negative or non-finite; first at example 5, position 0"):
    tasks.validate_labels(spec, neg, valid)
  with pytest.raises(LabelError, match=r"mask must have shape \[batch, positions\]"):
    tasks.validate_labels(spec, rel, valid[:, 0])
  with pytest.raises(LabelError, match=r"inputs\['input_ids'\] has shape \(24, 5, 3\)"):
    tasks.validate_labels(spec, rel, valid, inputs={"input_ids": np.zeros((B, 5, 3), int)})
  tasks.validate_labels(spec, rel, valid, inputs={"input_ids": np.zeros((B, C, 3), int)})


def test_ranking_spec_and_metric_names():
  assert TaskSpec("r", "ranking").metrics == ("loss", "mrr", "ndcg@10")
  with pytest.raises(ValueError, match="one output"):
    TaskSpec("r", "ranking", num_outputs=2)
  with pytest.raises(ValueError, match=r"unknown metrics \['ndcg@0'\]"):
    TaskSpec("r", "ranking", metrics=("ndcg@0",))
