"""Eval metrics in NumPy over a whole split, labelled examples only.

Eval predictions are gathered to the host and each metric is computed once
over every labelled example of the split (not averaged over batches), so AUC
and F1 are exact and padded or missing rows never count.
"""

import math
from typing import Dict, Sequence, Tuple

import numpy as np

from mtl_jax.tasks import TaskSpec


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def numpy_loss(spec: TaskSpec, outputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Per-example loss, the NumPy twin of ``losses.per_example_loss``."""
  o = outputs.astype(np.float64)
  if spec.kind == "binary":
    y = labels.astype(np.float64)
    return -(y * _log_sigmoid(o[:, 0]) + (1 - y) * _log_sigmoid(-o[:, 0]))
  if spec.kind == "multiclass":
    m = o.max(-1, keepdims=True)
    logz = (m + np.log(np.exp(o - m).sum(-1, keepdims=True)))[:, 0]
    return logz - o[np.arange(len(o)), labels.astype(int)]
  if spec.kind == "multilabel":
    y = labels.astype(np.float64)
    return -(y * _log_sigmoid(o) + (1 - y) * _log_sigmoid(-o)).mean(-1)
  y = labels.astype(np.float64).reshape(o.shape)
  return ((o - y) ** 2).mean(-1)


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC by the Mann-Whitney U statistic, ties counted half; NaN if one class is absent."""
  labels = labels.astype(bool)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  order = np.argsort(scores, kind="mergesort")
  ranks = np.empty(len(scores), np.float64)
  sorted_scores = scores[order]
  # Average ranks over ties.
  _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
  avg = first + (counts - 1) / 2.0 + 1.0
  ranks[order] = np.repeat(avg, counts)
  return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
  """Mean over labels of 2TP/(2TP+FP+FN); a label with no positive at all scores 0 (as sklearn)."""
  pred, labels = pred.astype(bool), labels.astype(bool)
  tp = (pred & labels).sum(0)
  fp = (pred & ~labels).sum(0)
  fn = (~pred & labels).sum(0)
  denom = 2 * tp + fp + fn
  f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
  return float(f1.mean())


def task_metrics(spec: TaskSpec, outputs: np.ndarray, labels: np.ndarray,
                 mask: np.ndarray) -> Dict[str, float]:
  """The spec's metrics over labelled examples; outputs [N, num_outputs].

  Also returns ``count``, the number of labelled examples. With none, every
  metric is NaN: there is nothing to measure.
  """
  mask = np.asarray(mask, bool)
  o, y = np.asarray(outputs)[mask], np.asarray(labels)[mask]
  result = {"count": float(mask.sum())}
  if mask.sum() == 0:
    result.update({m: float("nan") for m in spec.metrics})
    return result
  for m in spec.metrics:
    if m == "loss":
      v = numpy_loss(spec, o, y).mean()
    elif m == "accuracy" and spec.kind == "binary":
      v = ((o[:, 0] > 0) == y.astype(bool)).mean()
    elif m == "accuracy" and spec.kind == "multiclass":
      v = (o.argmax(-1) == y).mean()
    elif m == "accuracy":  # multilabel: mean over labels and examples
      v = ((o > 0) == y.astype(bool)).mean()
    elif m == "auc":
      v = binary_auc(o[:, 0], y)
    elif m == "macro_f1":
      v = macro_f1(o > 0, y)
    else:  # regression metrics, averaged uniformly over outputs
      yy = y.astype(np.float64).reshape(o.shape)
      err = o - yy
      var_y = yy.var(0)
      if m == "mse":
        v = (err ** 2).mean()
      elif m == "mae":
        v = np.abs(err).mean()
      elif m == "explained_variance":  # 1 - Var(residual) / Var(y)
        v = np.mean(1.0 - err.var(0) / np.where(var_y > 0, var_y, np.nan))
      elif m == "r2":  # 1 - MSE / Var(y), the School papers' "explained variance"
        v = np.mean(1.0 - (err ** 2).mean(0) / np.where(var_y > 0, var_y, np.nan))
      else:
        raise KeyError(f"task {spec.name!r}: unknown metric {m!r}")
    result[m] = float(v)
  return result


def mean_se(values: Sequence[float]) -> Tuple[float, float, int]:
  """Mean, standard error of the mean (ddof=1; NaN for one value) and count."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if len(v) == 0:
    return float("nan"), float("nan"), 0
  se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
  return float(v.mean()), se, len(v)


LOWER_IS_BETTER = {"loss": True, "mse": True, "mae": True, "accuracy": False, "auc": False,
                   "macro_f1": False, "explained_variance": False, "r2": False}


def delta_m(values: Dict[str, float], baseline: Dict[str, float],
            metric_of: Dict[str, str]) -> float:
  """Δm% (Maninis et al. 2019): mean over tasks of the signed relative change vs a baseline.

  ``values``/``baseline`` map task -> metric value, ``metric_of`` task ->
  metric name (which decides the sign: a drop in loss counts as a gain).
  Positive means better than the baseline (usually single-task training).
  """
  missing = sorted(set(metric_of) - set(values) | set(metric_of) - set(baseline))
  if missing:
    raise KeyError(f"delta_m: no value or baseline for tasks {missing}")
  terms = []
  for task, metric in metric_of.items():
    if metric not in LOWER_IS_BETTER:
      raise KeyError(f"delta_m: unknown direction for metric {metric!r}; known: {sorted(LOWER_IS_BETTER)}")
    sign = -1.0 if LOWER_IS_BETTER[metric] else 1.0
    terms.append(sign * (values[task] - baseline[task]) / abs(baseline[task]))
  return 100.0 * float(np.mean(terms))
