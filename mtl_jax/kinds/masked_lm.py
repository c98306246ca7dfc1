"""``masked_lm``: predict the original token at each masked position (BERT's MLM).

``num_outputs`` is the vocabulary size. Per example the inputs carry
``masked_lm_positions`` int [K] (the gathered positions, mtl_jax/data/mlm_masking.py),
the labels are the original token ids int [K] and the mask bool [K] marks
the positions in use; outputs are [K, vocab] logits, computed by the kind's
own head (mtl_jax/models/mlm_head.py: gather, transform, tied decoder) only
at those K positions. The loss is the mean cross-entropy over every masked
token of the batch (HF's -100 convention). Metrics stream over the split
(vocabulary-sized outputs are never kept): ``accuracy`` (top-1 over masked
tokens) and ``perplexity`` = exp(mean cross-entropy over masked tokens).
"""

import numpy as np

from mtl_jax.kinds.base import LabelError, register
from mtl_jax.kinds.multiclass import check_classes, numpy_softmax_ce
from mtl_jax.kinds.token_classification import TokenClassification

POSITIONS = "masked_lm_positions"  # the inputs key of the gathered positions [N, K]


@register("masked_lm")
class MaskedLM(TokenClassification):
  default_metrics = ("loss", "accuracy", "perplexity")
  valid_metrics = ("loss", "accuracy", "perplexity")
  position_axes = 1
  streams_metrics = True

  def check_spec(self, spec):
    if spec.num_outputs < 2:
      raise ValueError(f"task {spec.name!r}: masked_lm needs num_outputs = the vocabulary size, "
                       f"got {spec.num_outputs}")

  def check_labels(self, spec, labels, mask):
    check_classes(spec, labels, mask)

  def check_inputs(self, spec, mask, inputs):
    if inputs is None:
      return
    if not isinstance(inputs, dict) or POSITIONS not in inputs:
      keys = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
      raise LabelError(f"task {spec.name!r} (masked_lm): the inputs need {POSITIONS!r} "
                       f"[N, K] (the masked positions, as the text_corpus dataset makes them); "
                       f"got {keys}")
    pos = np.asarray(inputs[POSITIONS])
    if pos.shape != mask.shape:
      raise LabelError(f"task {spec.name!r} (masked_lm): inputs[{POSITIONS!r}] has shape "
                       f"{pos.shape} but labels and mask have {mask.shape}")
    length = np.shape(inputs["input_ids"])[1] if "input_ids" in inputs else None
    if length is not None and mask.any():
      bad = (pos[mask] < 0) | (pos[mask] >= length)
      if bad.any():
        raise LabelError(f"task {spec.name!r} (masked_lm): {int(bad.sum())} masked positions "
                         f"outside the sequence 0..{length - 1}")

  def metric_sums(self, spec, outputs, labels, mask):
    o, y = np.asarray(outputs)[mask], np.asarray(labels)[mask].astype(int)
    return {"nll": numpy_softmax_ce(o, y).sum(), "correct": np.sum(o.argmax(-1) == y),
            "tokens": np.asarray(mask.sum(), np.float64)}

  def metrics_from_sums(self, spec, sums):
    loss = float(sums["nll"] / sums["tokens"])
    return {"loss": loss, "accuracy": float(sums["correct"] / sums["tokens"]),
            "perplexity": float(np.exp(loss))}

