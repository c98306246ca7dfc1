"""``multilabel``: ``num_outputs`` independent 0/1 labels, mean sigmoid cross-entropy."""

import numpy as np
import optax

from mtl_jax.kinds import _numpy as npm
from mtl_jax.kinds.base import TaskKind, raise_bad_labels, register


@register("multilabel")
class Multilabel(TaskKind):
  default_metrics = ("loss", "macro_f1")
  valid_metrics = ("loss", "macro_f1", "accuracy")

  def label_shape(self, num_outputs):
    return (num_outputs,)

  def check_labels(self, spec, labels, mask):
    lab = labels[mask]
    raise_bad_labels(spec, labels, mask, (lab != 0) & (lab != 1), "labels other than 0/1")

  def per_example_loss(self, outputs, labels, mask=None):
    return optax.sigmoid_binary_cross_entropy(outputs, labels.astype(outputs.dtype)).mean(-1)

  def numpy_loss(self, spec, outputs, labels, mask=None):
    o, y = outputs.astype(np.float64), labels.astype(np.float64)
    return -(y * npm.log_sigmoid(o) + (1 - y) * npm.log_sigmoid(-o)).mean(-1)

  def metric(self, spec, metric, outputs, labels, mask):
    if metric == "accuracy":  # mean over labels and examples
      return ((outputs > 0) == labels.astype(bool)).mean()
    if metric == "macro_f1":
      return npm.macro_f1(outputs > 0, labels)
    return super().metric(spec, metric, outputs, labels, mask)
