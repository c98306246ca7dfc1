"""Eval metrics against independent NumPy computations."""

import numpy as np
import pytest

from mtl_jax import metrics
from mtl_jax.tasks import TaskSpec

RNG = np.random.default_rng(1)


def _auc_pairs(scores, labels):
  """O(n^2) definition: P(score_pos > score_neg) + 0.5 P(tie)."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  diff = pos[:, None] - neg[None, :]
  return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size


def test_auc_matches_pairwise_definition_with_ties():
  scores = np.round(RNG.normal(size=300), 1)  # many ties
  labels = RNG.integers(0, 2, 300)
  np.testing.assert_allclose(metrics.binary_auc(scores, labels), _auc_pairs(scores, labels))


def test_auc_single_class_is_nan():
  assert np.isnan(metrics.binary_auc(np.arange(5.0), np.ones(5)))


def test_binary_metrics_use_only_labelled_examples():
  spec = TaskSpec("t", "binary")
  o = RNG.normal(size=(200, 1))
  y = RNG.integers(0, 2, 200)
  mask = RNG.random(200) > 0.4
  r = metrics.task_metrics(spec, o, y, mask)
  assert r["count"] == mask.sum()
  np.testing.assert_allclose(r["accuracy"], ((o[mask, 0] > 0) == y[mask]).mean())
  np.testing.assert_allclose(r["auc"], _auc_pairs(o[mask, 0], y[mask]))


def test_multiclass_accuracy():
  spec = TaskSpec("t", "multiclass", 5)
  o = RNG.normal(size=(100, 5))
  y = RNG.integers(0, 5, 100)
  mask = np.ones(100, bool)
  assert metrics.task_metrics(spec, o, y, mask)["accuracy"] == pytest.approx((o.argmax(1) == y).mean())


def test_regression_metrics():
  spec = TaskSpec("t", "regression", 2, metrics=("mse", "mae", "explained_variance", "r2"))
  y = RNG.normal(size=(500, 2))
  o = y * 0.8 + 0.3 + RNG.normal(size=(500, 2)) * 0.1
  mask = RNG.random(500) > 0.2
  r = metrics.task_metrics(spec, o, y, mask)
  e, yy = (o - y)[mask], y[mask]
  np.testing.assert_allclose(r["mse"], (e ** 2).mean())
  np.testing.assert_allclose(r["mae"], np.abs(e).mean())
  np.testing.assert_allclose(r["explained_variance"], np.mean([1 - e[:, j].var() / yy[:, j].var() for j in range(2)]))
  np.testing.assert_allclose(r["r2"], np.mean([1 - (e[:, j] ** 2).mean() / yy[:, j].var() for j in range(2)]))
  # EV ignores the constant offset, R^2 does not.
  assert r["explained_variance"] > r["r2"]


def test_macro_f1_by_hand():
  spec = TaskSpec("t", "multilabel", 3, metrics=("macro_f1",))
  y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
  o = np.array([[1, -1, -1], [-1, 1, -1], [1, 1, -1], [-1, -1, 1]], float)
  # label 0: tp=1 fp=1 fn=1 -> 0.5; label 1: tp=2 -> 1.0; label 2: fp=1, no positives -> 0.
  r = metrics.task_metrics(spec, o, y, np.ones(4, bool))
  assert r["macro_f1"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_all_masked_metrics_are_nan_with_zero_count():
  spec = TaskSpec("t", "binary")
  r = metrics.task_metrics(spec, np.zeros((4, 1)), np.zeros(4), np.zeros(4, bool))
  assert r["count"] == 0 and np.isnan(r["accuracy"])


def test_delta_m_by_hand():
  # accuracy 0.9 -> 0.99 is +10%; mse 2.0 -> 1.0 is a 50% drop = +50% (lower is better).
  v = metrics.delta_m({"a": 0.99, "b": 1.0}, {"a": 0.9, "b": 2.0}, {"a": "accuracy", "b": "mse"})
  assert v == pytest.approx((10.0 + 50.0) / 2)
  assert metrics.delta_m({"a": 0.9}, {"a": 0.9}, {"a": "accuracy"}) == 0.0
  with pytest.raises(KeyError, match="no value or baseline"):
    metrics.delta_m({}, {"a": 1.0}, {"a": "mse"})


def test_similarity_pearson_spearman_match_scipy():
  stats = pytest.importorskip("scipy.stats")
  spec = TaskSpec("sts", "similarity")
  assert spec.metrics == ("loss", "pearson", "spearman")
  y = np.round(RNG.uniform(0, 5, 300), 1)  # STS-B-like scores with ties
  o = (y + RNG.normal(size=300)).astype(np.float32)[:, None]
  o[:20] = np.round(o[:20])  # ties in the predictions too
  mask = RNG.random(300) > 0.25
  y_nan = np.where(mask, y, np.nan)  # placeholders under the mask
  r = metrics.task_metrics(spec, o, y_nan, mask)
  np.testing.assert_allclose(r["pearson"], stats.pearsonr(o[mask, 0], y[mask])[0], rtol=1e-6)
  np.testing.assert_allclose(r["spearman"], stats.spearmanr(o[mask, 0], y[mask])[0], rtol=1e-6)
  np.testing.assert_allclose(r["loss"], ((o[mask, 0] - y[mask]) ** 2).mean(), rtol=1e-6)
  # A constant prediction has no correlation: NaN, not a number that looks like one.
  assert np.isnan(metrics.task_metrics(spec, np.ones((10, 1)), np.arange(10.0),
                                       np.ones(10, bool))["pearson"])


def test_metric_directions_come_from_the_kinds():
  assert not metrics.higher_is_better("loss") and not metrics.higher_is_better("mse")
  for m in ("accuracy", "auc", "macro_f1", "r2", "pearson", "spearman", "mrr", "ndcg@5"):
    assert metrics.higher_is_better(m), m
  assert metrics.higher_is_better("accuracy", "token_classification")
  with pytest.raises(KeyError, match="has no metric 'mrr'"):
    metrics.higher_is_better("mrr", "binary")
  with pytest.raises(KeyError, match="unknown direction for metric 'bleu'"):
    metrics.higher_is_better("bleu")


def test_delta_m_with_kinds():
  # mrr 0.5 -> 0.6 is +20%; spearman 0.8 -> 0.6 is -25%.
  v = metrics.delta_m({"q": 0.6, "s": 0.6}, {"q": 0.5, "s": 0.8}, {"q": "mrr", "s": "spearman"},
                      kind_of={"q": "ranking", "s": "similarity"})
  assert v == pytest.approx((20.0 - 25.0) / 2)
  with pytest.raises(KeyError, match="task 'q'.*has no metric 'auc'"):
    metrics.delta_m({"q": 1.0}, {"q": 1.0}, {"q": "auc"}, kind_of={"q": "ranking"})
