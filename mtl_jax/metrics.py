"""Eval metrics in NumPy over a whole split, labelled examples only.

Eval predictions are gathered to the host and each metric is computed once
over every labelled example of the split (not averaged over batches), so AUC
and F1 are exact and padded or missing rows never count. Which metrics exist,
and which direction is better, belongs to the task's kind (``mtl_jax/kinds/``).
"""

import math
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from mtl_jax import kinds
from mtl_jax.kinds._numpy import binary_auc, macro_f1  # noqa: F401  (public helpers)
from mtl_jax.tasks import TaskSpec


def numpy_loss(spec: TaskSpec, outputs: np.ndarray, labels: np.ndarray,
               mask: Optional[np.ndarray] = None) -> np.ndarray:
  """Per-example loss, the NumPy twin of ``losses.per_example_loss``."""
  return spec.task_kind.numpy_loss(spec, np.asarray(outputs), np.asarray(labels), mask)


def task_metrics(spec: TaskSpec, outputs: np.ndarray, labels: np.ndarray,
                 mask: np.ndarray) -> Dict[str, float]:
  """The spec's metrics over labelled examples; outputs [N, ..., num_outputs].

  Also returns ``count``, the number of labelled examples (an example of a
  token or ranking task is labelled when any of its positions is). With
  none, every metric is NaN: there is nothing to measure.
  """
  return spec.task_kind.metrics(spec, outputs, labels, mask)


def mean_se(values: Sequence[float]) -> Tuple[float, float, int]:
  """Mean, standard error of the mean (ddof=1; NaN for one value) and count."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if len(v) == 0:
    return float("nan"), float("nan"), 0
  se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
  return float(v.mean()), se, len(v)


def higher_is_better(metric: str, kind: Optional[str] = None) -> bool:
  """Whether a larger ``metric`` is better (for Δm% and model selection), from the kinds."""
  return kinds.higher_is_better(metric, kind)


def delta_m(values: Dict[str, Union[float, Dict[str, float]]],
            baseline: Dict[str, Union[float, Dict[str, float]]],
            metric_of: Dict[str, Union[str, Sequence[str]]],
            kind_of: Optional[Dict[str, str]] = None, average: str = "metrics") -> float:
  """Δm% (Maninis et al. 2019): the mean signed relative change vs a baseline, in percent.

  ``metric_of`` maps task -> a metric name or a sequence of them (NYUv2:
  segmentation miou and pixel_accuracy, depth abs_err and rel_err, five for
  normals). ``values``/``baseline`` map task -> the value of its one metric,
  or task -> {metric: value} (a results.json split). The direction of each
  metric (a drop in error counts as a gain) comes from the task's kind in
  ``kind_of`` (task -> kind name) or, without it, from the kinds that define
  the metric. Positive means better than the baseline (usually single-task
  training), as in Maninis et al. and LibMTL; Nash-MTL, CAGrad and FAMO
  print the opposite sign (lower is better there).

  ``average="metrics"``: the mean over every (task, metric) term, as Maninis
  et al. and the Nash-MTL / CAGrad / FAMO NYUv2 tables (9 terms there).
  ``average="tasks"``: the mean over tasks of each task's mean over its
  metrics, LibMTL's ``count_improvement``. Equal with one metric per task.
  """
  if average not in ("metrics", "tasks"):
    raise ValueError(f"delta_m: average must be 'metrics' or 'tasks', got {average!r}")
  missing = sorted(set(metric_of) - set(values) | set(metric_of) - set(baseline))
  if missing:
    raise KeyError(f"delta_m: no value or baseline for tasks {missing}")
  per_task = []
  for task, names in metric_of.items():
    names = [names] if isinstance(names, str) else list(names)
    if not names:
      raise ValueError(f"delta_m: task {task!r} names no metric")
    terms = []
    for metric in names:
      try:
        up = higher_is_better(metric, (kind_of or {}).get(task))
      except KeyError as e:
        raise KeyError(f"delta_m: task {task!r}: {e.args[0]}") from None
      v, b = (_metric_value(d, task, metric, len(names)) for d in (values, baseline))
      if not np.isfinite(b) or b == 0:
        raise ValueError(f"delta_m: the baseline {metric} of task {task!r} is {b}; "
                         "a relative change needs a finite, non-zero baseline")
      terms.append((1.0 if up else -1.0) * (v - b) / abs(b))
    per_task.append(terms)
  if average == "tasks":
    return 100.0 * float(np.mean([np.mean(t) for t in per_task]))
  return 100.0 * float(np.mean([x for t in per_task for x in t]))


def _metric_value(table, task: str, metric: str, num_metrics: int) -> float:
  entry = table[task]
  if isinstance(entry, dict):
    if metric not in entry:
      raise KeyError(f"delta_m: task {task!r} has no {metric!r}; it has {sorted(entry)}")
    return float(entry[metric])
  if num_metrics > 1:
    raise ValueError(f"delta_m: task {task!r} has {num_metrics} metrics but one value; "
                     "pass {metric: value}")
  return float(entry)


# ------------------------------------------------- Δm% in results.json (config.delta_m)

def read_baseline(baseline) -> Dict[str, Dict[str, Dict[str, float]]]:
  """``config.delta_m.baseline`` as {split or "*": {task: {metric: value}}}.

  A results.json path (or a list of them, e.g. one single-task run per task)
  gives per-split values; an inline {task: {metric: value}} (published
  numbers) is used for every split ("*").
  """
  import json
  import os
  if isinstance(baseline, dict):
    return {"*": {t: dict(v) for t, v in baseline.items()}}
  paths = [baseline] if isinstance(baseline, str) else list(baseline)
  out: Dict[str, Dict[str, Dict[str, float]]] = {}
  for path in paths:
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"config.delta_m.baseline: no results file {path}")
    with open(path) as f:
      results = json.load(f)
    for split, per_task in results.items():
      if split in ("replicas", "delta_m"):
        continue
      for task, vals in per_task.items():
        if task in out.setdefault(split, {}):
          raise ValueError(f"config.delta_m.baseline: task {task!r} ({split}) is in two "
                           f"baseline files; give each task once")
        out[split][task] = vals
  return out


def delta_m_metrics(specs, metrics_of=None) -> Dict[str, Sequence[str]]:
  """{task: metrics} for Δm%: ``metrics_of`` checked against the specs, or every reported
  metric of each task but ``loss`` (a loss is no quality measure)."""
  by_name = {s.name: s for s in specs}
  if metrics_of is None:
    return {s.name: [m for m in s.metrics if m != "loss"] or ["loss"] for s in specs}
  out = {}
  for task, names in dict(metrics_of).items():
    names = [names] if isinstance(names, str) else list(names)
    if task not in by_name:
      raise ValueError(f"config.delta_m.metrics: unknown task {task!r}; tasks: {list(by_name)}")
    bad = [m for m in names if m not in by_name[task].metrics]
    if bad or not names:
      raise ValueError(f"config.delta_m.metrics.{task}: {bad or names} not among the task's "
                       f"reported metrics {list(by_name[task].metrics)}")
    out[task] = names
  return out


def results_delta_m(results: Dict[str, Dict[str, Dict[str, float]]], baseline, specs,
                    metrics_of=None, average: str = "metrics") -> Dict[str, float]:
  """{split: Δm%} of a results dict ({split: {task: {metric: value}}}) for every split the
  baseline covers (``read_baseline``'s output)."""
  chosen = delta_m_metrics(specs, metrics_of)
  kind_of = {s.name: s.kind for s in specs}
  out = {}
  for split, per_task in results.items():
    base = baseline.get(split, baseline.get("*"))
    if base is None or not isinstance(per_task, dict):
      continue
    missing = sorted(set(chosen) - set(base))
    if missing:
      raise KeyError(f"config.delta_m.baseline has no {split} values for tasks {missing}")
    out[split] = delta_m(per_task, base, chosen, kind_of, average)
  return out
