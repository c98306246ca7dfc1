"""``multiclass``: one of ``num_outputs`` classes per example, softmax cross-entropy.

Pair classification (NLI, paraphrase) is this kind on a pair input. Besides
accuracy: ``f1`` (two classes only: F1 of class 1, as GLUE reports MRPC and
QQP) and ``mcc`` (Matthews correlation, GLUE's CoLA metric; the multiclass
form of Gorodkin 2004 for more classes, as sklearn; 0 when undefined).
"""

import jax.numpy as jnp
import numpy as np
import optax

from mtl_jax.kinds import _numpy as npm
from mtl_jax.kinds.base import TaskKind, raise_bad_labels, register


def check_classes(spec, labels, mask):
  lab = labels[mask]
  bad = (lab < 0) | (lab >= spec.num_outputs) | (lab != np.round(lab))
  raise_bad_labels(spec, labels, mask, bad, f"labels outside the classes 0..{spec.num_outputs - 1}")


def softmax_ce(outputs, labels):
  return optax.softmax_cross_entropy_with_integer_labels(outputs, labels.astype(jnp.int32))


def numpy_softmax_ce(outputs, labels):
  """-log softmax(outputs)[label] over the last axis, any leading shape, float64."""
  logp = npm.log_softmax(outputs.astype(np.float64))
  return -np.take_along_axis(logp, labels.astype(int)[..., None], -1)[..., 0]


def matthews(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Matthews correlation from the confusion matrix (multiclass form); 0 if undefined."""
  c = np.zeros((num_classes, num_classes), np.float64)
  np.add.at(c, (labels, pred), 1)
  t, p, n = c.sum(1), c.sum(0), c.sum()
  cov = np.trace(c) * n - t @ p
  denom = np.sqrt((n * n - p @ p) * (n * n - t @ t))
  return float(cov / denom) if denom > 0 else 0.0


@register("multiclass")
class Multiclass(TaskKind):
  default_metrics = ("loss", "accuracy")
  valid_metrics = ("loss", "accuracy", "f1", "mcc")

  def check_spec(self, spec):
    if spec.num_outputs < 2:
      raise ValueError(f"task {spec.name!r}: {spec.kind} needs num_outputs >= 2 (classes), "
                       f"got {spec.num_outputs}")
    if "f1" in spec.metrics and spec.num_outputs != 2:
      raise ValueError(f"task {spec.name!r}: metric 'f1' is the F1 of class 1 of a two-class "
                       f"task, but the task has {spec.num_outputs} classes")

  def label_shape(self, num_outputs):
    return ()

  def check_labels(self, spec, labels, mask):
    check_classes(spec, labels, mask)

  def per_example_loss(self, outputs, labels, mask=None):
    return softmax_ce(outputs, labels)

  def numpy_loss(self, spec, outputs, labels, mask=None):
    return numpy_softmax_ce(outputs, labels)

  def metric(self, spec, metric, outputs, labels, mask):
    pred = outputs.argmax(-1)
    if metric == "accuracy":
      return (pred == labels).mean()
    if metric == "f1":
      return npm.macro_f1(pred[:, None] == 1, labels[:, None] == 1)
    if metric == "mcc":
      return matthews(pred, labels.astype(int), spec.num_outputs)
    return super().metric(spec, metric, outputs, labels, mask)
