"""``multiclass``: one of ``num_outputs`` classes per example, softmax cross-entropy.

Pair classification (NLI, paraphrase) is this kind on a pair input.
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


@register("multiclass")
class Multiclass(TaskKind):
  default_metrics = ("loss", "accuracy")
  valid_metrics = ("loss", "accuracy")

  def check_spec(self, spec):
    if spec.num_outputs < 2:
      raise ValueError(f"task {spec.name!r}: {spec.kind} needs num_outputs >= 2 (classes), "
                       f"got {spec.num_outputs}")

  def label_shape(self, num_outputs):
    return ()

  def check_labels(self, spec, labels, mask):
    check_classes(spec, labels, mask)

  def per_example_loss(self, outputs, labels, mask=None):
    return softmax_ce(outputs, labels)

  def numpy_loss(self, spec, outputs, labels, mask=None):
    return numpy_softmax_ce(outputs, labels)

  def metric(self, spec, metric, outputs, labels, mask):
    if metric == "accuracy":
      return (outputs.argmax(-1) == labels).mean()
    return super().metric(spec, metric, outputs, labels, mask)
