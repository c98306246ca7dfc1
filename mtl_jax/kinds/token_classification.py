"""``token_classification``: one of ``num_outputs`` classes per token (NER, POS).

Labels are int [B, L], the mask is bool [B, L] (True = this token is
labelled: not padding, not a continuation sub-word, and the task labels this
example), outputs are [B, L, num_outputs]. The loss is the mean cross-entropy
over every labelled token of the batch (as Hugging Face's -100 convention);
accuracy and macro-F1 are per token, over labelled tokens only.
"""

import jax.numpy as jnp
import numpy as np

from mtl_jax.kinds.base import TaskKind, check_positions, register
from mtl_jax.kinds.multiclass import check_classes, numpy_softmax_ce, softmax_ce


def token_macro_f1(pred: np.ndarray, labels: np.ndarray) -> float:
  """Macro-F1 over the classes present in ``labels`` or ``pred`` (sklearn's default)."""
  classes = np.union1d(labels, pred)
  tp = np.array([((pred == c) & (labels == c)).sum() for c in classes], np.float64)
  n_pred = np.array([(pred == c).sum() for c in classes], np.float64)
  n_true = np.array([(labels == c).sum() for c in classes], np.float64)
  return float(np.mean(2 * tp / (n_pred + n_true)))  # n_pred + n_true > 0 for each class


@register("token_classification")
class TokenClassification(TaskKind):
  default_metrics = ("loss", "accuracy", "macro_f1")
  valid_metrics = ("loss", "accuracy", "macro_f1")
  position_axes = 1

  def check_spec(self, spec):
    if spec.num_outputs < 2:
      raise ValueError(f"task {spec.name!r}: {spec.kind} needs num_outputs >= 2 (classes), "
                       f"got {spec.num_outputs}")

  def check_labels(self, spec, labels, mask):
    check_classes(spec, labels, mask)

  def check_inputs(self, spec, mask, inputs):
    check_positions(spec, mask, inputs)

  def per_example_loss(self, outputs, labels, mask=None):
    if outputs.shape[:-1] != labels.shape:
      raise ValueError(f"{self.name}: outputs {outputs.shape} do not fit labels {labels.shape}: "
                       f"the per-token labels/mask must have the inputs' sequence length")
    if mask is not None:  # padding positions may hold NaN outputs (fully masked attention)
      outputs = jnp.where(mask[..., None], outputs, 0)
    return softmax_ce(outputs, labels)  # per token

  def numpy_loss(self, spec, outputs, labels, mask=None):
    """Loss of each labelled token (flattened)."""
    if mask is not None:
      outputs, labels = outputs[mask], labels[mask]
    return numpy_softmax_ce(outputs, labels).reshape(-1)

  def metric(self, spec, metric, outputs, labels, mask):
    pred, true = outputs.argmax(-1)[mask], labels[mask].astype(int)
    if metric == "accuracy":
      return (pred == true).mean()
    if metric == "macro_f1":
      return token_macro_f1(pred, true)
    return super().metric(spec, metric, outputs, labels, mask)
