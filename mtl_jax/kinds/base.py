"""The task-kind interface: everything that depends on what a task predicts.

A kind owns the per-example label shape and its checks, the head's output
size, the masked loss (jax, on group-stacked arrays), the NumPy metrics with
their defaults and which direction is better. tasks.py, losses.py and
metrics.py only dispatch to it, so adding a kind is one file plus one line in
``mtl_jax/kinds/__init__.py``. docs/tasks.md describes the conventions.

Shapes. ``P`` is ``position_axes`` (0 for one label per example; 1 for a label
per token or per candidate). Per example: ``mask`` has P axes (one bool per
position), ``labels`` has ``label_shape`` and the model output has P position
axes then ``head_outputs``. Losses receive arrays with any number of leading
axes (a task axis when stacked), then the batch axis.
"""

from typing import Dict, FrozenSet, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.registry import Registry

KINDS = Registry("task kind")  # name -> the kind's single (stateless) instance


def register(name: str):
  """Class decorator: registers one instance of a TaskKind subclass as ``name``."""
  def decorator(cls):
    kind = cls()
    kind.name = name
    KINDS.register(name)(kind)
    return cls
  return decorator


class LabelError(ValueError):
  """Labels that do not fit their task: wrong shape, out of range, non-finite."""


def safe_labels(labels: jax.Array, mask: jax.Array) -> jax.Array:
  """Replaces placeholders under mask=False by 0 so they cannot make NaN gradients."""
  m = mask.reshape(mask.shape + (1,) * (labels.ndim - mask.ndim))
  return jnp.where(m, labels, jnp.zeros_like(labels))


def masked_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over the last axis of the mask=True entries; exactly 0 where none is."""
  total = jnp.sum(jnp.where(mask, values, 0.0), axis=-1)
  count = jnp.sum(mask.astype(values.dtype), axis=-1)
  return total / jnp.maximum(count, 1.0)


def flatten_trailing(x: jax.Array, n: int) -> jax.Array:
  """Merges the last ``n`` axes into one (the batch and position axes of a loss)."""
  return x if n == 1 else x.reshape(x.shape[:x.ndim - n] + (-1,))


class TaskKind:
  """Base class of the kinds; subclasses are stateless and registered in KINDS.

  Class attributes:
    name: the registry name (``TaskSpec.kind``).
    default_metrics: reported when a task names none.
    valid_metrics: what a task may ask for (``is_valid_metric`` may accept
      patterns too, e.g. ``ndcg@k``).
    lower_is_better: metrics where smaller is better; every other valid
      metric is higher-is-better (Δm% signs and model selection use this).
    position_axes: axes between the batch axis and the label/output axes.
    output_axes: axes between the batch axis and the head outputs in the model
      output; ``position_axes`` unless a kind says otherwise (the per-pixel
      kinds have 2, H and W, but one mask entry per example).
  """
  name: str = ""
  default_metrics: Tuple[str, ...] = ("loss",)
  valid_metrics: Tuple[str, ...] = ("loss",)
  lower_is_better: FrozenSet[str] = frozenset({"loss"})
  position_axes: int = 0

  @property
  def output_axes(self) -> int:
    return self.position_axes

  # ------------------------------------------------------------------ spec

  def check_spec(self, spec) -> None:
    """Raises ValueError if ``spec`` (a TaskSpec) does not fit this kind."""

  def label_shape(self, num_outputs: int) -> Tuple[Optional[int], ...]:
    """Per-example label shape; None stands for a position axis (length from the data)."""
    del num_outputs
    return (None,) * self.position_axes

  def head_outputs(self, num_outputs: int) -> int:
    """Output units of the head, per example (per position for positional kinds)."""
    return num_outputs

  def is_valid_metric(self, metric: str) -> bool:
    return metric in self.valid_metrics

  def higher_is_better(self, metric: str) -> bool:
    """Direction of ``metric`` for this kind; KeyError if the kind has no such metric."""
    if not self.is_valid_metric(metric):
      raise KeyError(f"task kind {self.name!r} has no metric {metric!r}; valid: "
                     f"{list(self.valid_metrics)}")
    return metric not in self.lower_is_better

  # ---------------------------------------------------------------- labels

  def check_labels(self, spec, labels: np.ndarray, mask: np.ndarray) -> None:
    """Value checks on labelled entries; shapes are already checked. Raises LabelError."""

  def check_inputs(self, spec, mask: np.ndarray, inputs) -> None:
    """Checks labels against the inputs (e.g. sequence length); no-op by default."""

  # ------------------------------------------------------------- jax loss

  def per_example_loss(self, outputs: jax.Array, labels: jax.Array,
                       mask: Optional[jax.Array] = None) -> jax.Array:
    """Loss per example (per position for positional kinds): [..., B(, P)]."""
    raise NotImplementedError

  def loss(self, outputs: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Masked mean loss over the batch (and positions): [..., B, ...] -> [...].

    Placeholders under mask=False are zeroed before the loss, so neither they
    nor their gradient can be NaN; no labelled entry gives exactly 0.
    """
    per = self.per_example_loss(outputs, safe_labels(labels, mask), mask)
    n = 1 + self.position_axes
    return masked_mean(flatten_trailing(per, n), flatten_trailing(mask, n))

  def loss_count(self, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """How many units ``loss`` averages over ([..., B, ...] -> [...]): the denominator that
    lets gradient accumulation weight microbatches into the exact large-batch mean."""
    del labels
    n = 1 + self.position_axes
    return jnp.sum(flatten_trailing(mask, n).astype(jnp.float32), axis=-1)

  # -------------------------------------------------------- NumPy metrics

  def numpy_loss(self, spec, outputs: np.ndarray, labels: np.ndarray,
                 mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Per-example loss in float64, the NumPy twin of ``per_example_loss``."""
    raise NotImplementedError

  def metric(self, spec, metric: str, outputs: np.ndarray, labels: np.ndarray,
             mask: np.ndarray) -> float:
    """One metric over labelled examples only (rows already selected; ``mask``
    is their per-position mask, all True for non-positional kinds)."""
    if metric == "loss":
      return float(self.numpy_loss(spec, outputs, labels, mask).mean())
    raise KeyError(f"task {spec.name!r}: unknown metric {metric!r}")

  def metrics(self, spec, outputs: np.ndarray, labels: np.ndarray,
              mask: np.ndarray) -> Dict[str, float]:
    """The spec's metrics over labelled examples, plus ``count`` (labelled examples).

    An example is labelled when any of its positions is. With none, every
    metric is NaN: there is nothing to measure.
    """
    if self.streams_metrics:
      return self.metrics_of_sums(spec, self.labelled_sums(spec, outputs, labels, mask))
    mask = np.asarray(mask, bool)
    rows = labelled_rows(mask)
    result = {"count": float(rows.sum())}
    if not rows.any():
      result.update({m: float("nan") for m in spec.metrics})
      return result
    o, y, m = np.asarray(outputs)[rows], np.asarray(labels)[rows], mask[rows]
    for name in spec.metrics:
      result[name] = float(self.metric(spec, name, o, y, m))
    return result

  # ------------------------------------------- metrics from sums (streamed)
  # A kind whose metrics are functions of sums over examples (a confusion
  # matrix, error sums, counts within a threshold) sets ``streams_metrics``
  # and defines ``metric_sums`` and ``metrics_from_sums``. Evaluation then adds
  # up each batch's sums instead of keeping a split's outputs, which for
  # per-pixel or vocabulary-sized outputs would not fit in host memory; the
  # result is the same as over the whole split at once (``metrics`` is the
  # sums of one batch). Medians and AUCs are not sums: such kinds keep the
  # default path, or approximate in a documented way (e.g. a histogram).
  streams_metrics: bool = False

  def metric_sums(self, spec, outputs: np.ndarray, labels: np.ndarray,
                  mask: np.ndarray) -> Dict[str, np.ndarray]:
    """Additive statistics of labelled rows (``metric``'s arguments) for ``metrics_from_sums``."""
    raise NotImplementedError(f"task kind {self.name!r} sets streams_metrics but defines no "
                              "metric_sums")

  def metrics_from_sums(self, spec, sums: Dict[str, np.ndarray]) -> Dict[str, float]:
    """The spec's metrics from sums over a split with at least one labelled example."""
    raise NotImplementedError(f"task kind {self.name!r} sets streams_metrics but defines no "
                              "metrics_from_sums")

  def labelled_sums(self, spec, outputs: np.ndarray, labels: np.ndarray,
                    mask: np.ndarray) -> Dict[str, np.ndarray]:
    """``metric_sums`` of one batch's labelled rows, plus ``count``: what evaluation adds."""
    mask = np.asarray(mask, bool)
    rows = labelled_rows(mask)
    sums = {"count": np.asarray(rows.sum(), np.float64)}
    if rows.any():
      sums.update(self.metric_sums(spec, np.asarray(outputs)[rows], np.asarray(labels)[rows],
                                   mask[rows]))
    return sums

  def metrics_of_sums(self, spec, sums: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Metrics plus ``count`` from summed ``labelled_sums``; NaN when nothing is labelled."""
    result = {"count": float(sums["count"])}
    if not result["count"]:
      result.update({m: float("nan") for m in spec.metrics})
      return result
    values = self.metrics_from_sums(spec, sums)
    result.update({m: float(values[m]) for m in spec.metrics})
    return result

  def __repr__(self):
    return f"<task kind {self.name!r}>"


def labelled_rows(mask: np.ndarray) -> np.ndarray:
  """bool[N]: the examples with at least one labelled position."""
  return mask.reshape(mask.shape[0], -1).any(-1) if mask.ndim > 1 else mask


def add_sums(total: Optional[Dict[str, np.ndarray]],
             sums: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """``total + sums`` key by key (a key missing on one side counts as 0)."""
  if total is None:
    return dict(sums)
  out = dict(total)
  for k, v in sums.items():
    out[k] = out[k] + v if k in out else v
  return out


def raise_bad_labels(spec, labels: np.ndarray, mask: np.ndarray, bad: np.ndarray,
                     what: str) -> None:
  """Raises LabelError naming the task, the count and the first bad example.

  ``bad`` has the shape of ``labels[mask]`` (or of ``mask`` itself for
  per-example checks) and marks the offending labelled entries.
  """
  if not np.any(bad):
    return
  full = np.zeros(mask.shape + bad.shape[1:], bool)
  full[mask] = bad
  first = np.argwhere(full)[0]
  where = f"example {int(first[0])}"
  if mask.ndim > 1:
    where += ", position " + ", ".join(str(int(i)) for i in first[1:mask.ndim])
  raise LabelError(f"task {spec.name!r} ({spec.kind}): {int(bad.sum())} {what}; first at "
                   f"{where}: {labels[first[0]]!r}")


def check_positions(spec, mask: np.ndarray, inputs) -> None:
  """Raises LabelError unless axis 1 of the inputs has the mask's positions.

  Positions (tokens, candidates) are axis 1 of every input: ``input_ids`` when
  the inputs are a dict holding it, else every input leaf.
  """
  if inputs is None:
    return
  if isinstance(inputs, dict) and "input_ids" in inputs:
    inputs = {"input_ids": inputs["input_ids"]}
  num = mask.shape[1]
  for path, leaf in jax.tree_util.tree_leaves_with_path(inputs):
    shape = np.shape(leaf)
    if len(shape) < 2 or shape[1] != num:
      raise LabelError(
          f"task {spec.name!r} ({spec.kind}): labels and mask have {num} positions per example "
          f"(mask shape {mask.shape}) but inputs{jax.tree_util.keystr(path)} has shape {shape}; "
          f"positions (tokens, candidates) must be axis 1 of the inputs")
