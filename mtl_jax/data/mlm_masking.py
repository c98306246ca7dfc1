"""BERT's masked-LM corruption, in NumPy on the host, seeded: inputs -> (masked inputs, targets).

Per sequence (Devlin et al. 2019; google-research/bert create_pretraining_data.py):
``n = min(max_predictions, max(1, round(rate * candidates)))`` positions are
selected among the real, non-special tokens ([CLS], [SEP], [PAD], [MASK],
[UNK] are never selected), in a random order; with ``whole_word`` a word
(a token and its WordPiece ``##`` continuations) is selected whole or not at
all, skipping a word that would overflow ``n``. Each selected token becomes
[MASK] with probability 0.8, a uniformly random non-special token with 0.1,
and stays itself with 0.1.

Why on the host, at dataset build: the corruption is then a pure function of
(seed, copy, sequence), so the data pipeline, task mixing, multi-host slices
and bitwise resume work unchanged, and validation/test are masked once, so
their scores compare across runs. ``dupe_factor`` copies of the training
split with different masks give BERT's static masking (it used 10); dynamic
per-step masking (RoBERTa) is not implemented.

Targets are gathered: ``max_predictions`` positions per sequence, so the
vocabulary projection runs on [B, K] rows instead of [B, L] (the head gathers
before projecting).
"""

from typing import Dict, Optional, Sequence

import numpy as np

from mtl_jax.kinds.masked_lm import POSITIONS  # noqa: F401  (the inputs key, [N, K])


def word_groups(ids: np.ndarray, candidate: np.ndarray, continuation: np.ndarray):
  """Candidate positions grouped into words: a token and the ``##`` tokens after it."""
  groups = []
  for i in np.flatnonzero(candidate):
    if groups and continuation[ids[i]] and groups[-1][-1] == i - 1:
      groups[-1].append(i)
    else:
      groups.append([i])
  return groups


def unit_groups(units: np.ndarray, candidate: np.ndarray):
  """Candidate positions grouped by ``units`` (one int per position; equal ids form one
  unit, e.g. a phrase or an entity; a negative id makes a position not selectable)."""
  groups = {}
  for i in np.flatnonzero(candidate & (units >= 0)):
    groups.setdefault(int(units[i]), []).append(int(i))
  return list(groups.values())


def mask_sequences(input_ids: np.ndarray, attention_mask: np.ndarray, special_ids: Sequence[int],
                   mask_id: int, vocab_size: int, seed, rate: float = 0.15,
                   max_predictions: int = 20, whole_word: bool = False,
                   continuation: Optional[np.ndarray] = None,
                   units: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
  """Masks each row of ``input_ids`` [N, L]; see the module docstring.

  ``units`` int [N, L] replaces words by caller-defined units that are
  selected whole (ERNIE's phrase / entity masking): positions of a row with
  the same id form one unit; a negative id is never selected.

  Returns ``input_ids`` (corrupted copy), ``positions`` int32 [N, K] (sorted;
  0 where unused), ``targets`` int32 [N, K] (the original ids), ``weights``
  bool [N, K] (True = a selected position) and ``action`` int8 [N, K] (0 mask,
  1 random, 2 kept; -1 unused) for the statistics tests. ``seed`` is anything
  ``np.random.default_rng`` takes (e.g. ``[seed, copy]``).
  """
  if not 0.0 < rate < 1.0:
    raise ValueError(f"masked_lm: mask rate must be in (0, 1), got {rate}")
  if max_predictions < 1:
    raise ValueError(f"masked_lm: max_predictions must be >= 1, got {max_predictions}")
  if whole_word and continuation is None:
    raise ValueError("masked_lm: whole_word masking needs the tokenizer's continuation table")
  if whole_word and units is not None:
    raise ValueError("masked_lm: give whole_word or units, not both")
  if units is not None and np.shape(units) != np.shape(input_ids):
    raise ValueError(f"masked_lm: units has shape {np.shape(units)}, input_ids "
                     f"{np.shape(input_ids)}")
  input_ids = np.asarray(input_ids, np.int32)
  n, length = input_ids.shape
  special = np.zeros(vocab_size, bool)
  special[np.asarray(special_ids, int)] = True
  pool = np.flatnonzero(~special).astype(np.int32)  # what a random replacement draws from
  if int(input_ids.max(initial=0)) >= vocab_size or int(input_ids.min(initial=0)) < 0:
    raise ValueError(f"masked_lm: token ids outside the vocabulary 0..{vocab_size - 1}")
  rng = np.random.default_rng(seed)
  out = input_ids.copy()
  k = max_predictions
  positions = np.zeros((n, k), np.int32)
  targets = np.zeros((n, k), np.int32)
  weights = np.zeros((n, k), bool)
  action = np.full((n, k), -1, np.int8)
  candidate = (np.asarray(attention_mask) > 0) & ~special[input_ids]
  for r in range(n):
    cand = candidate[r]
    num = int(cand.sum())
    if not num:
      continue
    want = min(k, max(1, int(round(num * rate))))
    if units is not None:
      groups = unit_groups(np.asarray(units[r]), cand)
    elif whole_word:
      groups = word_groups(input_ids[r], cand, continuation)
    else:
      groups = [[i] for i in np.flatnonzero(cand)]
    chosen = []
    for g in rng.permutation(len(groups)):
      if len(chosen) >= want:
        break
      if len(chosen) + len(groups[g]) > want:
        continue
      chosen.extend(groups[g])
    chosen = np.sort(np.asarray(chosen, np.int32))
    m = len(chosen)
    u = rng.random(m)
    act = np.where(u < 0.8, 0, np.where(u < 0.9, 1, 2)).astype(np.int8)
    random_ids = pool[rng.integers(0, len(pool), m)]
    out[r, chosen] = np.where(act == 0, mask_id, np.where(act == 1, random_ids, input_ids[r, chosen]))
    positions[r, :m], targets[r, :m] = chosen, input_ids[r, chosen]
    weights[r, :m], action[r, :m] = True, act
  return {"input_ids": out, "positions": positions, "targets": targets, "weights": weights,
          "action": action}
