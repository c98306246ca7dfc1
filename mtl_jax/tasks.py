"""Task specifications and the checks that keep labels honest.

A task is a name, a kind, an output size, a loss weight and the metrics to
report. Every batch carries ``labels[task]`` and ``mask[task]`` (bool per
example, or per token / candidate for kinds with positions); ``mask=False``
means the label is missing and is ignored everywhere. Everything that depends
on the kind lives in its plug-in (``mtl_jax/kinds/``): this file never
branches on a kind's name.
"""

import dataclasses
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np

from mtl_jax import kinds
from mtl_jax.kinds.base import LabelError, TaskKind  # noqa: F401  (LabelError: public here)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """One task of a multi-task model.

  Attributes:
    name: key of the task in ``batch["labels"]``, ``batch["mask"]`` and outputs.
    kind: a registered task kind (``mtl_jax/kinds/``, docs/tasks.md).
    num_outputs: classes for multiclass and token_classification, labels for
      multilabel, targets for regression; 1 for binary (one logit), ranking
      (a score per candidate) and usually similarity.
    weight: static weight of this task's loss in the total.
    metrics: names reported at eval time; defaults depend on the kind.
  """
  name: str
  kind: str
  num_outputs: int = 1
  weight: float = 1.0
  metrics: Tuple[str, ...] = ()

  def __post_init__(self):
    if self.kind not in kinds.KINDS:
      raise ValueError(f"task {self.name!r}: unknown kind {self.kind!r}; valid kinds: "
                       f"{list(kinds.names())}")
    if self.num_outputs < 1:
      raise ValueError(f"task {self.name!r}: num_outputs must be >= 1, got {self.num_outputs}")
    kind = self.task_kind
    kind.check_spec(self)
    if not np.isfinite(self.weight) or self.weight < 0:
      raise ValueError(f"task {self.name!r}: weight must be finite and >= 0, got {self.weight}")
    metrics = tuple(self.metrics) or kind.default_metrics
    bad = [m for m in metrics if not kind.is_valid_metric(m)]
    if bad:
      raise ValueError(f"task {self.name!r} ({self.kind}): unknown metrics {bad}; "
                       f"valid: {list(kind.valid_metrics)}")
    object.__setattr__(self, "metrics", metrics)

  @property
  def task_kind(self) -> TaskKind:
    """The kind plug-in (label checks, loss, metrics) of this task."""
    return kinds.get(self.kind)

  @property
  def label_shape(self) -> Tuple[Optional[int], ...]:
    """Per-example label shape; None marks a position axis (tokens, candidates)
    whose length comes from the data."""
    return self.task_kind.label_shape(self.num_outputs)

  @property
  def mask_shape(self) -> Tuple[None, ...]:
    """Per-example mask shape: () for one label per example, (None,) per position."""
    return (None,) * self.task_kind.position_axes


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


def validate_labels(spec: TaskSpec, labels: np.ndarray, mask: np.ndarray, inputs=None) -> None:
  """Raises LabelError naming the task if labels or mask do not fit the spec.

  Only labelled entries (mask True) are range-checked: missing labels may hold
  any placeholder (-1, NaN). With ``inputs`` (array or dict of arrays), kinds
  with positions also check them against the inputs' axis 1.
  """
  labels = np.asarray(labels)
  mask = np.asarray(mask)
  kind = spec.task_kind
  if mask.dtype != np.bool_:
    raise LabelError(f"task {spec.name!r}: mask must be bool, got {mask.dtype}")
  if mask.ndim != 1 + kind.position_axes:
    want = "[batch]" if not kind.position_axes else "[batch, positions] (one entry per position)"
    raise LabelError(f"task {spec.name!r} ({spec.kind}): mask must have shape {want}, "
                     f"got {mask.shape}")
  expected = mask.shape + spec.label_shape[kind.position_axes:]
  if len(labels.shape) != len(expected) or any(  # None: any length (e.g. image height)
      e is not None and d != e for d, e in zip(labels.shape, expected)):
    raise LabelError(f"task {spec.name!r}: labels have shape {labels.shape} but mask "
                     f"{mask.shape} and kind {spec.kind} with num_outputs="
                     f"{spec.num_outputs} need {expected}")
  kind.check_inputs(spec, mask, inputs)
  if mask.any():
    kind.check_labels(spec, labels, mask)


def validate_batch(specs: Sequence[TaskSpec], labels: Dict[str, Any], mask: Dict[str, Any],
                   inputs=None) -> None:
  """Checks a dataset's labels/mask dicts against the configured tasks.

  Data may carry more tasks than configured (they are dropped); a configured
  task the data lacks is an error. ``inputs`` (optional) lets kinds with
  positions check their length against the inputs.
  """
  names = [s.name for s in specs]
  missing = [n for n in names if n not in labels or n not in mask]
  if missing:
    raise LabelError(f"config tasks {missing} are not in the data, which has tasks "
                     f"{sorted(labels)}")
  for s in specs:
    validate_labels(s, labels[s.name], mask[s.name], inputs)


@dataclasses.dataclass(frozen=True)
class TaskGroup:
  """Tasks of one kind and output size: their heads and losses are stacked.

  Stacking is what lets 128 tasks compile as one head and one loss: the
  group's outputs have shape [len(names), batch, num_outputs] (with the
  kind's position axis before num_outputs for token and ranking kinds).
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
