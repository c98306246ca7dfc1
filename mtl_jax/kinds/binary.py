"""``binary``: one logit per example, labels 0/1, sigmoid cross-entropy."""

import numpy as np
import optax

from mtl_jax.kinds import _numpy as npm
from mtl_jax.kinds.base import TaskKind, raise_bad_labels, register


@register("binary")
class Binary(TaskKind):
  default_metrics = ("loss", "accuracy", "auc")
  valid_metrics = ("loss", "accuracy", "auc")

  def check_spec(self, spec):
    if spec.num_outputs != 1:
      raise ValueError(f"task {spec.name!r}: a binary task has num_outputs=1 (one logit), "
                       f"got {spec.num_outputs}; use kind='multilabel' for several")

  def label_shape(self, num_outputs):
    return ()

  def check_labels(self, spec, labels, mask):
    lab = labels[mask]
    raise_bad_labels(spec, labels, mask, (lab != 0) & (lab != 1), "labels other than 0/1")

  def per_example_loss(self, outputs, labels, mask=None):
    return optax.sigmoid_binary_cross_entropy(outputs[..., 0], labels.astype(outputs.dtype))

  def numpy_loss(self, spec, outputs, labels, mask=None):
    o, y = outputs.astype(np.float64)[:, 0], labels.astype(np.float64)
    return -(y * npm.log_sigmoid(o) + (1 - y) * npm.log_sigmoid(-o))

  def metric(self, spec, metric, outputs, labels, mask):
    if metric == "accuracy":
      return ((outputs[:, 0] > 0) == labels.astype(bool)).mean()
    if metric == "auc":
      return npm.binary_auc(outputs[:, 0], labels)
    return super().metric(spec, metric, outputs, labels, mask)
