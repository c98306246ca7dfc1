"""Checks of loaded splits that would otherwise give NaN metrics or shape errors without a word.

``check_splits(splits)`` runs where the splits are loaded (train.py), on
every split: train and validation must hold examples, every split's inputs
must have the train inputs' per-example shape and be finite, and every task
must keep at least one labelled train example (a hide rate of 1 leaves none).
"""

from typing import Mapping

import jax
import numpy as np

from mtl_jax.data.base import ArrayDataset
from mtl_jax.data.streaming import chunks

REQUIRED_NONEMPTY = ("train", "validation")


class DataCheckError(ValueError):
  """A loaded split is empty, non-finite or of the wrong shape."""


def _first_nonfinite(inputs: np.ndarray):
  """(example index, position within the example, value) of the first NaN/Inf, or None."""
  flat = inputs.reshape(len(inputs), -1)
  bad = ~np.isfinite(flat)
  rows = np.flatnonzero(bad.any(axis=1))
  if not len(rows):
    return None
  i = int(rows[0])
  j = int(np.flatnonzero(bad[i])[0])
  pos = np.unravel_index(j, inputs.shape[1:]) if inputs.ndim > 1 else ()
  return i, tuple(int(p) for p in pos), flat[i, j], int(bad.any(axis=1).sum())


def _leaves(inputs):
  """{key: array}: 'inputs' for an array, 'inputs/<key>' for each entry of a dict."""
  flat = jax.tree_util.tree_flatten_with_path(inputs)[0]
  return {"/".join(["inputs"] + [str(getattr(k, "key", k)) for k in path]): np.asarray(x)
          for path, x in flat}


def check_splits(splits: Mapping[str, ArrayDataset], chunk_size: int = 256) -> None:
  """Raises DataCheckError naming the split, the example index and the offending key.

  Splits are read chunk by chunk (``streaming.chunks``): an ArrayDataset is
  one chunk, a streaming split ``chunk_size`` decoded examples at a time, so
  data on disk is checked without ever being in memory whole.
  """
  for name in REQUIRED_NONEMPTY:
    if name not in splits or splits[name] is None:
      raise DataCheckError(f"the data has no {name!r} split")
    if len(splits[name]) == 0:
      raise DataCheckError(f"split {name!r} has no examples (0 inputs)")
  train_shapes = {k: x.shape[1:] for k, x in
                  _leaves(splits["train"].take(np.arange(1))["inputs"]).items()}
  labelled = {}
  for name, ds in splits.items():
    if ds is None:
      continue
    for offset, chunk in chunks(ds, chunk_size):
      _check_chunk(name, chunk, offset, train_shapes)
      if name == "train":
        for task, mask in chunk["mask"].items():
          labelled[task] = labelled.get(task, False) or bool(np.asarray(mask).any())
  for task, any_label in labelled.items():
    if not any_label:
      raise DataCheckError(f"split 'train': task {task!r} has no labelled example (all "
                           f"{len(splits['train'])} masked out, e.g. by a hide rate of 1): "
                           f"nothing to train it on")


def _check_chunk(name: str, chunk: dict, offset: int, train_shapes: dict) -> None:
  """The checks of one chunk of split ``name`` whose first example is ``offset``."""
  split_leaves = _leaves(chunk["inputs"])
  if sorted(split_leaves) != sorted(train_shapes):
    raise DataCheckError(f"split {name!r}: inputs have keys {sorted(split_leaves)}, but train "
                         f"has {sorted(train_shapes)}")
  for key, x in split_leaves.items():
    shape, train_shape = tuple(x.shape[1:]), tuple(train_shapes[key])
    if shape != train_shape:
      raise DataCheckError(f"split {name!r}: key {key!r} has per-example shape {shape}, but "
                           f"train has {train_shape}")
    if np.issubdtype(x.dtype, np.inexact):
      bad = _first_nonfinite(x)
      if bad is not None:
        i, pos, value, count = bad
        raise DataCheckError(f"split {name!r}: key {key!r} of example {offset + i} is {value} "
                             f"at position {pos} ({count} examples have NaN/Inf inputs); "
                             f"metrics on it would be NaN. Clean or drop these examples.")
  for task, labels in chunk["labels"].items():
    labels = np.asarray(labels)
    if np.issubdtype(labels.dtype, np.inexact):
      mask = np.asarray(chunk["mask"][task], bool)
      # Per-position masks ([B, L]) cover labels [B, L, ...] entry by entry.
      finite = np.isfinite(labels).reshape(labels.shape[:mask.ndim] + (-1,)).all(-1)
      rows = np.flatnonzero((mask & ~finite).reshape(len(labels), -1).any(1))
      if len(rows):
        raise DataCheckError(f"split {name!r}: labels of task {task!r} of example "
                             f"{offset + int(rows[0])} are not finite ({len(rows)} labelled "
                             f"examples are); mask them out or fix them")
