"""Task specifications and the checks that keep labels honest.

A task is a name, a kind, an output size, a loss weight and the metrics to
report. Every batch carries ``labels[task]`` and ``mask[task]`` (bool per
example); ``mask=False`` means the label is missing and is ignored everywhere.
"""

import dataclasses
from typing import Any, Dict, Iterable, Mapping, Sequence, Tuple

import numpy as np

KINDS = ("binary", "multiclass", "multilabel", "regression")

DEFAULT_METRICS = {
    "binary": ("loss", "accuracy", "auc"),
    "multiclass": ("loss", "accuracy"),
    "multilabel": ("loss", "macro_f1"),
    "regression": ("loss", "mse", "mae", "explained_variance"),
}

VALID_METRICS = {
    "binary": ("loss", "accuracy", "auc"),
    "multiclass": ("loss", "accuracy"),
    "multilabel": ("loss", "macro_f1", "accuracy"),
    "regression": ("loss", "mse", "mae", "explained_variance", "r2"),
}


class LabelError(ValueError):
  """Labels that do not fit their task: wrong shape, out of range, non-finite."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task of a multi-task model.

  Attributes:
    name: key of the task in ``batch["labels"]``, ``batch["mask"]`` and outputs.
    kind: one of KINDS.
    num_outputs: classes for multiclass, labels for multilabel, targets for
      regression; always 1 for binary (one logit).
    weight: static weight of this task's loss in the total.
    metrics: names reported at eval time; defaults depend on the kind.
  """
  name: str
  kind: str
  num_outputs: int = 1
  weight: float = 1.0
  metrics: Tuple[str, ...] = ()

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; valid kinds: {list(KINDS)}")
    if self.num_outputs < 1:
      raise ValueError(f"task {self.name!r}: num_outputs must be >= 1, got {self.num_outputs}")
    if self.kind == "binary" and self.num_outputs != 1:
      raise ValueError(f"task {self.name!r}: a binary task has num_outputs=1 (one logit), "
                       f"got {self.num_outputs}; use kind='multilabel' for several")
    if self.kind == "multiclass" and self.num_outputs < 2:
      raise ValueError(f"task {self.name!r}: multiclass needs num_outputs >= 2")
    if not np.isfinite(self.weight) or self.weight < 0:
      raise ValueError(f"task {self.name!r}: weight must be finite and >= 0, got {self.weight}")
    metrics = tuple(self.metrics) or DEFAULT_METRICS[self.kind]
    bad = [m for m in metrics if m not in VALID_METRICS[self.kind]]
    if bad:
      raise ValueError(f"task {self.name!r} ({self.kind}): unknown metrics {bad}; "
                       f"valid: {list(VALID_METRICS[self.kind])}")
    object.__setattr__(self, "metrics", metrics)

  @property
  def label_shape(self) -> Tuple[int, ...]:
    """Per-example label shape."""
    if self.kind in ("binary", "multiclass"):
      return ()
    if self.kind == "regression" and self.num_outputs == 1:
      return ()
    return (self.num_outputs,)


def specs_from_config(tasks_cfg: Iterable[Mapping[str, Any]]) -> Tuple[TaskSpec, ...]:
  """Builds TaskSpecs from ``config.tasks`` (a list of dicts); names must be unique."""
  specs = []
  for t in tasks_cfg:
    t = dict(t)
    unknown = set(t) - {f.name for f in dataclasses.fields(TaskSpec)}
    if unknown:
      raise ValueError(f"task config {t.get('name')!r}: unknown keys {sorted(unknown)}; "
                       f"valid: {[f.name for f in dataclasses.fields(TaskSpec)]}")
    t["metrics"] = tuple(t.get("metrics", ()))
    specs.append(TaskSpec(**t))
  names = [s.name for s in specs]
  dupes = sorted({n for n in names if names.count(n) > 1})
  if dupes:
    raise ValueError(f"duplicate task names in config.tasks: {dupes}")
  if not specs:
    raise ValueError("config.tasks is empty: a model needs at least one task")
  return tuple(specs)


def validate_labels(spec: TaskSpec, labels: np.ndarray, mask: np.ndarray) -> None:
  """Raises LabelError naming the task if labels or mask do not fit the spec.

  Only labelled entries (mask True) are range-checked: missing labels may hold
  any placeholder (-1, NaN).
  """
  labels = np.asarray(labels)
  mask = np.asarray(mask)
  if mask.dtype != np.bool_:
    raise LabelError(f"task {spec.name!r}: mask must be bool, got {mask.dtype}")
  if mask.ndim != 1:
    raise LabelError(f"task {spec.name!r}: mask must have shape [batch], got {mask.shape}")
  expected = (mask.shape[0],) + spec.label_shape
  if labels.shape != expected:
    raise LabelError(f"task {spec.name!r}: labels have shape {labels.shape} but mask "
                     f"{mask.shape} and kind {spec.kind} with num_outputs="
                     f"{spec.num_outputs} need {expected}")
  lab = labels[mask]
  if lab.size == 0:
    return
  if spec.kind == "regression":
    bad = ~np.isfinite(lab)
    what = "non-finite regression targets"
  elif spec.kind == "multiclass":
    bad = (lab < 0) | (lab >= spec.num_outputs) | (lab != np.round(lab))
    what = f"labels outside the classes 0..{spec.num_outputs - 1}"
  else:  # binary, multilabel
    bad = (lab != 0) & (lab != 1)
    what = "labels other than 0/1"
  if np.any(bad):
    where = np.flatnonzero(mask)[np.flatnonzero(bad.reshape(bad.shape[0], -1).any(-1))]
    raise LabelError(f"task {spec.name!r} ({spec.kind}): {int(bad.sum())} {what}; first at "
                     f"example {int(where[0])}: {labels[where[0]]!r}")


def validate_batch(specs: Sequence[TaskSpec], labels: Dict[str, Any], mask: Dict[str, Any]) -> None:
  """Checks a dataset's labels/mask dicts against the configured tasks.

  Data may carry more tasks than configured (they are dropped); a configured
  task the data lacks is an error.
  """
  names = [s.name for s in specs]
  missing = [n for n in names if n not in labels or n not in mask]
  if missing:
    raise LabelError(f"config tasks {missing} are not in the data, which has tasks "
                     f"{sorted(labels)}")
  for s in specs:
    validate_labels(s, labels[s.name], mask[s.name])


@dataclasses.dataclass(frozen=True)
class TaskGroup:
  """Tasks of one kind and output size: their heads and losses are stacked.

  Stacking is what lets 128 tasks compile as one head and one loss: the
  group's outputs have shape [len(names), batch, num_outputs].
  """
  kind: str
  num_outputs: int
  names: Tuple[str, ...]

  @property
  def key(self) -> str:
    return f"{self.kind}_{self.num_outputs}"


def group_tasks(specs: Sequence[TaskSpec]) -> Tuple[TaskGroup, ...]:
  """Groups tasks by (kind, num_outputs), keeping first-appearance order."""
  order: Dict[Tuple[str, int], list] = {}
  for s in specs:
    order.setdefault((s.kind, s.num_outputs), []).append(s.name)
  return tuple(TaskGroup(k, n, tuple(names)) for (k, n), names in order.items())
