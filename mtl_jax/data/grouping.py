"""Rows drawn together: the training order of a split with a ``grouped_ranking`` task.

``grouped_ranking`` (MT-DNN's QNLI ranking, docs/pipelines.md) ranks the rows
of one group *within a batch*; with rows drawn independently, the candidates
of one question would share a batch only by chance. ``train_groups`` gives
each row of a split a unit (its group, or a unit of its own), and
``permutation`` shuffles units instead of rows: a group's rows stay
consecutive, so a batch splits a group only at its two ends. Without groups
(``None``) the permutation is ``rng.permutation(n)`` itself, so every other
dataset's order is unchanged.
"""

from typing import Optional, Sequence

import numpy as np

from mtl_jax.data.base import ArrayDataset

GROUPED_KINDS = ("grouped_ranking",)


def train_groups(split, specs: Sequence) -> Optional[np.ndarray]:
  """Unit per row (int64 [N]) from the labelled grouped tasks of ``split``; None if none."""
  if not isinstance(split, ArrayDataset):  # a streaming split reads labels per batch: row order
    return None
  labels = split.labels
  keys = []
  for s in specs:
    if s.kind in GROUPED_KINDS and s.name in labels and np.asarray(split.mask[s.name]).any():
      m = np.asarray(split.mask[s.name], bool)
      keys.append(np.where(m, np.asarray(labels[s.name])[:, 0], -1.0))
  if not keys:
    return None
  n = len(keys[0])
  unlabelled = np.stack(keys, 1).max(1) < 0
  keys.append(np.where(unlabelled, np.arange(n), -1))  # rows of no group: a unit each
  _, units = np.unique(np.stack(keys, 1), axis=0, return_inverse=True)
  return units.reshape(-1).astype(np.int64)


def permutation(rng: np.random.Generator, n: int, groups: Optional[np.ndarray]) -> np.ndarray:
  """Row order of one epoch: units in random order, a unit's rows in file order."""
  if groups is None:
    return rng.permutation(n)
  rank = np.empty(groups.max() + 1, np.int64)
  rank[rng.permutation(len(rank))] = np.arange(len(rank))
  return np.argsort(rank[groups], kind="stable")
