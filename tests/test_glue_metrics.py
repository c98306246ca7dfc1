"""GLUE's per-task metrics on the multiclass kind against sklearn: F1 (class 1) and MCC."""

import numpy as np
import pytest
from sklearn.metrics import f1_score, matthews_corrcoef

from mtl_jax import metrics
from mtl_jax.tasks import TaskSpec


@pytest.mark.parametrize("classes,seed", [(2, 0), (2, 1), (3, 2), (5, 3)])
def test_f1_and_mcc_match_sklearn(classes, seed):
  rng = np.random.default_rng(seed)
  n = 200
  y = rng.integers(0, classes, n)
  o = rng.normal(size=(n, classes)) + 1.5 * np.eye(classes)[y] * rng.uniform(0, 1, (n, 1))
  mask = rng.uniform(size=n) < 0.8
  wanted = ("accuracy", "mcc") + (("f1",) if classes == 2 else ())
  r = metrics.task_metrics(TaskSpec("t", "multiclass", classes, metrics=wanted), o, y, mask)
  pred = o[mask].argmax(1)
  assert r["mcc"] == pytest.approx(matthews_corrcoef(y[mask], pred), abs=1e-12)
  if classes == 2:
    assert r["f1"] == pytest.approx(f1_score(y[mask], pred), abs=1e-12)


def test_degenerate_cases_follow_sklearn():
  y = np.array([0, 1, 0, 1])
  o = np.zeros((4, 2))
  o[:, 0] = 1.0  # always predicts class 0: MCC undefined (0), F1 of class 1 is 0
  r = metrics.task_metrics(TaskSpec("t", "multiclass", 2, metrics=("mcc", "f1")), o, y,
                           np.ones(4, bool))
  assert r["mcc"] == 0.0 == matthews_corrcoef(y, o.argmax(1))
  assert r["f1"] == 0.0 == f1_score(y, o.argmax(1), zero_division=0)


def test_f1_needs_two_classes():
  with pytest.raises(ValueError, match="metric 'f1' is the F1 of class 1 of a two-class task, "
                     "but the task has 3 classes"):
    TaskSpec("mnli", "multiclass", 3, metrics=("f1",))
