"""``ranking``: a query with C candidates (padded), one score per candidate.

Convention. Inputs carry the candidates on axis 1 (``[B, C, ...]``, every
input leaf); the trunk returns per-candidate features ``[B, C, D]`` and the
head one score per candidate, so a task's output is ``[B, C, 1]``
(``num_outputs=1``). Labels are graded relevance ``[B, C]`` (float >= 0; 0 =
not relevant) and the mask ``[B, C]`` marks the real (non-padding)
candidates of labelled queries.

Loss: listwise softmax cross-entropy (ListNet top-1 with the normalised
relevance as target, Cao et al. 2007; TF-Ranking's ``SoftmaxLoss``):
``-sum_i (r_i / sum_j r_j) log softmax(s)_i`` over the valid candidates. With
one relevant candidate it is the cross-entropy of picking it. The loss is
the mean over queries.

Queries. A query with no valid candidate (mask all False) is an unlabelled
example: it adds nothing and is not counted. A labelled query with no
relevant candidate is rejected by validation (LabelError naming it), since it
has no target, MRR or NDCG; if one reaches the loss or metrics anyway it is
skipped, never NaN.

Metrics over queries: ``mrr`` (reciprocal rank of the best-ranked relevant
candidate; ties ranked pessimistically, non-relevant first), ``ndcg@k`` and
``ndcg`` (all candidates): linear gain r_i, discount 1/log2(rank + 1), tied
scores share their average gain, as sklearn.metrics.ndcg_score.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.kinds import _numpy as npm
from mtl_jax.kinds.base import (LabelError, TaskKind, check_positions, masked_mean,
                                 raise_bad_labels, register)

_NDCG = re.compile(r"ndcg(?:@([1-9][0-9]*))?")


def listwise_softmax_loss(scores, relevance, valid):
  """Per-query loss and whether the query counts: scores/relevance/valid [..., C] -> [...]."""
  rel = jnp.where(valid, relevance, 0).astype(scores.dtype)
  total = rel.sum(-1, keepdims=True)
  counts = valid.any(-1) & (total[..., 0] > 0)
  target = rel / jnp.where(total > 0, total, 1)
  top = jax.lax.stop_gradient(jnp.max(jnp.where(valid, scores, -jnp.inf), -1, keepdims=True))
  z = jnp.where(valid, scores - jnp.where(jnp.isfinite(top), top, 0), 0)
  norm = jnp.sum(jnp.where(valid, jnp.exp(z), 0), -1, keepdims=True)
  log_p = z - jnp.log(jnp.where(norm > 0, norm, 1))
  return -jnp.sum(jnp.where(valid, target * log_p, 0), -1), counts


def reciprocal_ranks(scores, relevance, valid):
  """1/rank of the best-scored relevant candidate per query, ties pessimistic: [N, C] -> [N]."""
  relevant = valid & (relevance > 0)
  best = np.max(np.where(relevant, scores, -np.inf), -1, keepdims=True)
  ahead = (valid & (scores > best)).sum(-1) + (valid & ~relevant & (scores == best)).sum(-1)
  return 1.0 / (1.0 + ahead)


def ndcg(scores, relevance, k=None) -> float:
  """NDCG@k of one query (1-D arrays of its valid candidates), tie-averaged as sklearn."""
  n = len(scores)
  k = n if k is None else min(k, n)
  discount = np.zeros(n)
  discount[:k] = 1.0 / np.log2(np.arange(k) + 2.0)
  cum = np.cumsum(discount)
  _, inv, counts = np.unique(-scores, return_inverse=True, return_counts=True)
  gain = np.zeros(len(counts))
  np.add.at(gain, inv, relevance)
  ends = np.cumsum(counts) - 1
  dcg = (gain / counts * np.diff(cum[ends], prepend=0.0)).sum()
  ideal = (np.sort(relevance)[::-1] * discount).sum()
  return float(dcg / ideal)


@register("ranking")
class Ranking(TaskKind):
  default_metrics = ("loss", "mrr", "ndcg@10")
  valid_metrics = ("loss", "mrr", "ndcg", "ndcg@<k>")
  position_axes = 1

  def check_spec(self, spec):
    if spec.num_outputs != 1:
      raise ValueError(f"task {spec.name!r}: a ranking task scores each candidate with one "
                       f"output (num_outputs=1), got {spec.num_outputs}")

  def is_valid_metric(self, metric):
    return metric in ("loss", "mrr") or _NDCG.fullmatch(metric) is not None

  def check_labels(self, spec, labels, mask):
    lab = labels[mask]
    raise_bad_labels(spec, labels, mask, ~np.isfinite(lab) | (lab < 0),
                     "relevance labels that are negative or non-finite")
    no_relevant = mask.any(1) & ~(mask & (np.where(mask, labels, 0) > 0)).any(1)
    if no_relevant.any():
      i = int(np.flatnonzero(no_relevant)[0])
      raise LabelError(
          f"task {spec.name!r} ({spec.kind}): {int(no_relevant.sum())} queries have candidates "
          f"but none is relevant (relevance > 0); first at example {i}: {labels[i]!r}. Such a "
          f"query has no loss, MRR or NDCG: drop it or mask it out "
          f"(mask[{spec.name!r}][{i}, :] = False)")

  def check_inputs(self, spec, mask, inputs):
    check_positions(spec, mask, inputs)

  def per_example_loss(self, outputs, labels, mask=None):
    mask = jnp.ones(labels.shape, bool) if mask is None else mask
    return listwise_softmax_loss(outputs[..., 0], labels, mask)[0]

  def loss(self, outputs, labels, mask):
    if outputs.shape[:-1] != labels.shape or outputs.shape[-1] != 1:
      raise ValueError(f"{self.name}: outputs {outputs.shape} do not fit relevance labels "
                       f"{labels.shape}: need [..., B, C, 1] for [..., B, C]")
    per, counts = listwise_softmax_loss(outputs[..., 0], labels, mask)
    return masked_mean(per, counts)

  def loss_count(self, labels, mask):
    """Queries with a valid relevant candidate: what ``loss`` averages over."""
    rel = jnp.where(mask, labels, 0)
    return jnp.sum((mask.any(-1) & (rel.sum(-1) > 0)).astype(jnp.float32), axis=-1)

  def numpy_loss(self, spec, outputs, labels, mask=None):
    """Loss of each query with a relevant candidate, float64."""
    s = outputs[..., 0].astype(np.float64)
    mask = np.ones(s.shape, bool) if mask is None else mask
    rel = np.where(mask, labels, 0).astype(np.float64)
    ok = rel.sum(-1) > 0
    s, rel, mask = s[ok], rel[ok], mask[ok]
    target = rel / rel.sum(-1, keepdims=True)
    log_p = npm.log_softmax(np.where(mask, s, -np.inf))
    return -np.where(mask, target * np.where(mask, log_p, 0), 0).sum(-1)

  def metric(self, spec, metric, outputs, labels, mask):
    s = outputs[..., 0].astype(np.float64)
    rel = np.where(mask, labels, 0).astype(np.float64)
    ok = (mask & (rel > 0)).any(-1)
    if metric == "mrr":
      return reciprocal_ranks(s, rel, mask)[ok].mean()
    m = _NDCG.fullmatch(metric)
    if m:
      k = int(m.group(1)) if m.group(1) else None
      return np.mean([ndcg(s[i][mask[i]], rel[i][mask[i]], k) for i in np.flatnonzero(ok)])
    return super().metric(spec, metric, outputs, labels, mask)
