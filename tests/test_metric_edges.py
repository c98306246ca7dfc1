"""Metric edge cases against NumPy/SciPy oracles: constant targets, zero baselines, masked
rows, non-finite values. (Core metric values are in tests/test_metrics.py.)"""

import math

import numpy as np
import pytest
from scipy import stats

from mtl_jax import metrics
from mtl_jax.tasks import TaskSpec

RNG = np.random.default_rng(0)


def _ev_r2_oracle(pred, y):
  """Per-output 1 - Var(residual)/Var(y) and 1 - MSE/Var(y), averaged over outputs."""
  pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
  ev = [1 - np.var(y[:, j] - pred[:, j]) / np.var(y[:, j]) for j in range(y.shape[1])]
  r2 = [1 - np.mean((y[:, j] - pred[:, j]) ** 2) / np.var(y[:, j]) for j in range(y.shape[1])]
  return np.mean(ev), np.mean(r2)


def test_regression_metrics_use_labelled_rows_only():
  spec = TaskSpec("r", "regression", 2, metrics=("mse", "mae", "explained_variance", "r2"))
  pred, y = RNG.normal(size=(40, 2)), RNG.normal(size=(40, 2))
  mask = RNG.random(40) > 0.3
  y_garbage = y.copy()
  y_garbage[~mask] = np.nan  # a masked row's label may be anything, NaN included
  got = metrics.task_metrics(spec, pred, y_garbage, mask)
  ev, r2 = _ev_r2_oracle(pred[mask], y[mask])
  assert got["count"] == mask.sum()
  np.testing.assert_allclose(got["explained_variance"], ev, rtol=1e-12)
  np.testing.assert_allclose(got["r2"], r2, rtol=1e-12)
  np.testing.assert_allclose(got["mse"], np.mean((pred[mask] - y[mask]) ** 2), rtol=1e-12)
  np.testing.assert_allclose(got["mae"], np.mean(np.abs(pred[mask] - y[mask])), rtol=1e-12)


@pytest.mark.parametrize("perfect", [False, True])
def test_constant_target_gives_undefined_ev_and_r2(perfect):
  """Var(y) = 0: EV and R² are 0/0 or x/0, undefined; NaN, never a finite number or ±inf."""
  spec = TaskSpec("r", "regression", 1, metrics=("mse", "explained_variance", "r2"))
  y = np.full((20, 1), 3.0)
  pred = y.copy() if perfect else y + RNG.normal(size=y.shape)
  got = metrics.task_metrics(spec, pred, y, np.ones(20, bool))
  assert math.isnan(got["explained_variance"]) and math.isnan(got["r2"]), got
  np.testing.assert_allclose(got["mse"], np.mean((pred - y) ** 2), rtol=1e-12)


def test_constant_target_in_one_output_makes_the_average_undefined():
  """The uniform average over outputs includes the undefined one (no silent drop)."""
  spec = TaskSpec("r", "regression", 2, metrics=("explained_variance", "r2"))
  y = np.stack([RNG.normal(size=30), np.full(30, 1.0)], 1)
  got = metrics.task_metrics(spec, RNG.normal(size=(30, 2)), y, np.ones(30, bool))
  assert math.isnan(got["explained_variance"]) and math.isnan(got["r2"]), got


def _macro_f1_oracle(pred, y):
  f1 = []
  for j in range(y.shape[1]):
    tp = np.sum(pred[:, j] & y[:, j])
    fp = np.sum(pred[:, j] & ~y[:, j])
    fn = np.sum(~pred[:, j] & y[:, j])
    f1.append(0.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
  return np.mean(f1)


def test_multilabel_f1_ignores_masked_rows():
  spec = TaskSpec("m", "multilabel", 4, metrics=("macro_f1", "accuracy"))
  logits = RNG.normal(size=(50, 4))
  y = RNG.random((50, 4)) > 0.6
  y[:, 3] = False  # a label with no positive among the labelled rows ...
  logits[:, 3] = -1.0  # ... and never predicted: F1 0 by convention (sklearn zero_division=0)
  mask = RNG.random(50) > 0.4
  got = metrics.task_metrics(spec, logits, y, mask)
  np.testing.assert_allclose(got["macro_f1"], _macro_f1_oracle(logits[mask] > 0, y[mask]),
                             rtol=1e-12)
  np.testing.assert_allclose(got["accuracy"], np.mean((logits[mask] > 0) == y[mask]), rtol=1e-12)
  # Whatever the masked rows hold, the metrics do not move.
  logits2, y2 = logits.copy(), y.copy()
  logits2[~mask], y2[~mask] = 5.0, True
  assert metrics.task_metrics(spec, logits2, y2, mask) == got


def test_no_labelled_row_gives_nan_metrics_and_zero_count():
  spec = TaskSpec("m", "multilabel", 3)
  got = metrics.task_metrics(spec, RNG.normal(size=(5, 3)), np.ones((5, 3), bool),
                             np.zeros(5, bool))
  assert got["count"] == 0 and all(math.isnan(v) for k, v in got.items() if k != "count")


def test_mean_se_against_scipy_and_with_non_finite_values():
  v = RNG.normal(size=7)
  m, se, n = metrics.mean_se(list(v))
  np.testing.assert_allclose([m, se], [v.mean(), stats.sem(v)], rtol=1e-12)
  assert n == 7
  # Non-finite values (a diverged seed) are left out, and the count says so.
  m, se, n = metrics.mean_se([1.0, float("nan"), 3.0, float("inf")])
  assert (m, n) == (2.0, 2)
  np.testing.assert_allclose(se, stats.sem([1.0, 3.0]), rtol=1e-12)
  m, se, n = metrics.mean_se([2.0])
  assert m == 2.0 and math.isnan(se) and n == 1
  m, se, n = metrics.mean_se([float("nan")])
  assert math.isnan(m) and math.isnan(se) and n == 0


def test_delta_m_value():
  values = {"a": 0.9, "b": 0.5}
  baseline = {"a": 0.8, "b": 0.4}
  # a: accuracy +12.5 %; b: loss +25 % is a 25 % loss of quality.
  got = metrics.delta_m(values, baseline, {"a": "accuracy", "b": "loss"})
  np.testing.assert_allclose(got, 100 * np.mean([(0.9 - 0.8) / 0.8, -(0.5 - 0.4) / 0.4]))


def test_delta_m_zero_baseline_is_a_clear_error():
  with pytest.raises(ValueError, match=r"baseline.*'b'.*0"):
    metrics.delta_m({"a": 0.9, "b": 0.1}, {"a": 0.8, "b": 0.0}, {"a": "accuracy", "b": "mse"})
