"""``grouped_ranking``: candidates as ordinary pair rows, ranked within their query's group.

MT-DNN's pairwise ranking (Liu et al. 2019, QNLI) without a ``[B, C, L]``
input: each (query, candidate) pair is one row of an ordinary ``[B, L]``
pair batch, so it mixes with every other pair task. Labels are float
``[B, 2]``: column 0 the query's group id (an integer), column 1 the
candidate's relevance (>= 0; 0 = not relevant). One score per row
(``num_outputs=1``).

Loss: for each group, a softmax over its rows' scores *and a null candidate
of score 0* (the "no candidate answers" option); the target is the
relevance-normalised distribution over the group's rows, or the null when
none is relevant. The null anchors the score scale, which a plain softmax
over candidates leaves free (shift-invariant): without it a question with
one candidate (GLUE's QNLI v2) has loss 0 and one whose only candidate is
wrong has no target. With one candidate the loss is exactly sigmoid
cross-entropy; with several it is MT-DNN's softmax over the candidates
plus the null. The loss is the mean over groups.

Groups are formed among the rows a batch holds in training (the samplers
shuffle such a split by group, data/grouping.py, so a batch splits a group
only at its ends; each part is then ranked against the null alone) and over
the whole split in evaluation. (With ``model.route_heads`` the routed loss
averages ``per_example_loss`` over rows, not groups: equal for one-row
groups, else scaled by groups / rows.)

``accuracy`` (GLUE's per-row QNLI accuracy): a row is predicted relevant
when it is its group's top-scored row (ties: the first) and beats the null
(score > 0); compared with relevance > 0 for every labelled row.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mtl_jax.kinds.base import TaskKind, raise_bad_labels, register

MAX_GROUP_ID = 2 ** 24  # exact integers in float32


def _groups(labels, mask):
  """same [..., B, B] (labelled rows of one group), first [..., B] (a group's first row)."""
  g = labels[..., 0]
  same = (g[..., :, None] == g[..., None, :]) & mask[..., :, None] & mask[..., None, :]
  b = g.shape[-1]
  earlier = jnp.tril(jnp.ones((b, b), bool), -1)
  first = mask & ~jnp.any(same & earlier, -1)
  return same, first


def row_losses(scores, labels, mask):
  """Each row's share of its group's loss ([..., B]); the shares of a group sum to its loss."""
  same, first = _groups(labels, mask)
  rel = jnp.where(mask, labels[..., 1], 0).astype(scores.dtype)
  s = jnp.where(mask, scores, 0)
  top = jnp.max(jnp.where(same, s[..., None, :], -jnp.inf), -1)
  top = jax.lax.stop_gradient(jnp.maximum(jnp.where(mask, top, 0), 0))  # the null scores 0
  z = jnp.sum(jnp.where(same, jnp.exp(s[..., None, :] - top[..., None]), 0), -1)
  log_z = top + jnp.log(jnp.exp(-top) + z)
  total = jnp.sum(jnp.where(same, rel[..., None, :], 0), -1)
  ranked = rel / jnp.where(total > 0, total, 1) * (log_z - s)
  return jnp.where(mask, jnp.where(total > 0, ranked, jnp.where(first, log_z, 0)), 0)


def group_index(group_ids: np.ndarray) -> np.ndarray:
  """Dense group index per row (0..G-1, first-appearance order)."""
  _, first, inv = np.unique(group_ids, return_index=True, return_inverse=True)
  order = np.argsort(np.argsort(first))
  return order[inv.reshape(-1)]


@register("grouped_ranking")
class GroupedRanking(TaskKind):
  default_metrics = ("loss", "accuracy")
  valid_metrics = ("loss", "accuracy")

  def check_spec(self, spec):
    if spec.num_outputs != 1:
      raise ValueError(f"task {spec.name!r}: a grouped_ranking task scores each row with one "
                       f"output (num_outputs=1), got {spec.num_outputs}")

  def label_shape(self, num_outputs):
    return (2,)

  def check_labels(self, spec, labels, mask):
    g, r = labels[..., 0], labels[..., 1]
    bad_g = ~np.isfinite(g) | (g < 0) | (g >= MAX_GROUP_ID) | (np.round(g) != g)
    raise_bad_labels(spec, labels, mask, bad_g[mask],
                     f"group ids (labels[..., 0]) that are not integers in [0, {MAX_GROUP_ID})")
    raise_bad_labels(spec, labels, mask, (~np.isfinite(r) | (r < 0))[mask],
                     "relevance (labels[..., 1]) that is negative or non-finite")

  def per_example_loss(self, outputs, labels, mask=None):
    mask = jnp.ones(labels.shape[:-1], bool) if mask is None else mask
    return row_losses(outputs[..., 0], labels, mask)

  def loss(self, outputs, labels, mask):
    if outputs.shape[:-1] != labels.shape[:-1] or outputs.shape[-1] != 1 or \
        labels.shape[-1] != 2:
      raise ValueError(f"{self.name}: outputs {outputs.shape} do not fit labels "
                       f"{labels.shape}: need [..., B, 1] for [..., B, 2] (group, relevance)")
    labels = jnp.where(mask[..., None], labels, 0)
    per = row_losses(outputs[..., 0], labels, mask)
    return per.sum(-1) / jnp.maximum(self.loss_count(labels, mask), 1.0)

  def loss_count(self, labels, mask):
    """Groups among the labelled rows: what ``loss`` averages over."""
    return jnp.sum(_groups(labels, mask)[1].astype(jnp.float32), -1)

  def numpy_loss(self, spec, outputs, labels, mask=None):
    """Loss of each group (first-appearance order), float64: [G]."""
    s = outputs[:, 0].astype(np.float64)
    gi = group_index(labels[:, 0])
    out = np.zeros(gi.max() + 1 if len(gi) else 0)
    for k in range(len(out)):
      rows = gi == k
      rel = labels[rows, 1].astype(np.float64)
      scores = np.concatenate([[0.0], s[rows]])  # the null first
      log_p = scores - np.logaddexp.reduce(scores)
      target = np.concatenate([[0.0], rel / rel.sum()]) if rel.sum() > 0 else \
          np.eye(len(scores))[0]
      out[k] = -(target * log_p).sum()
    return out

  def predict(self, outputs, labels) -> np.ndarray:
    """Per row: its group's top-scored row (first on ties) with score > 0."""
    s = outputs[:, 0]
    gi = group_index(labels[:, 0])
    pred = np.zeros(len(s), bool)
    for k in np.unique(gi):
      rows = np.flatnonzero(gi == k)
      best = rows[np.argmax(s[rows])]
      pred[best] = s[best] > 0
    return pred

  def metric(self, spec, metric, outputs, labels, mask):
    if metric == "accuracy":
      return (self.predict(outputs, labels) == (labels[:, 1] > 0)).mean()
    return super().metric(spec, metric, outputs, labels, mask)
