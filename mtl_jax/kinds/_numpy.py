"""NumPy helpers shared by the kinds' metrics (float64, host side)."""

import numpy as np


def log_sigmoid(x):
  return -np.logaddexp(0.0, -x)


def log_softmax(o: np.ndarray) -> np.ndarray:
  """Log-softmax over the last axis, stable."""
  m = o.max(-1, keepdims=True)
  return o - (m + np.log(np.exp(o - m).sum(-1, keepdims=True)))


def rankdata(x: np.ndarray) -> np.ndarray:
  """Ranks 1..n of a 1-D array, ties given their average rank (scipy's default)."""
  order = np.argsort(x, kind="mergesort")
  ranks = np.empty(len(x), np.float64)
  _, first, counts = np.unique(x[order], return_index=True, return_counts=True)
  ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1.0, counts)
  return ranks


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float:
  """ROC AUC by the Mann-Whitney U statistic, ties counted half; NaN if one class is absent."""
  labels = labels.astype(bool)
  n_pos, n_neg = labels.sum(), (~labels).sum()
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = rankdata(scores)
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


def pearson(x: np.ndarray, y: np.ndarray) -> float:
  """Pearson r of two 1-D arrays; NaN when either is constant."""
  x, y = x - x.mean(), y - y.mean()
  denom = np.sqrt((x * x).sum() * (y * y).sum())
  return float((x * y).sum() / denom) if denom > 0 else float("nan")
