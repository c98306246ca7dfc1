"""Checks of loaded splits that would otherwise give NaN metrics or shape errors without a word.

``check_splits(splits)`` runs where the splits are loaded (train.py), on
every split: train and validation must hold examples, every split's inputs
must have the train inputs' per-example shape and be finite, and every task
must keep at least one labelled train example (a hide rate of 1 leaves none).
"""

from typing import Mapping

import numpy as np

from mtl_jax.data.base import ArrayDataset

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


def check_splits(splits: Mapping[str, ArrayDataset]) -> None:
  """Raises DataCheckError naming the split, the example index and the offending key."""
  for name in REQUIRED_NONEMPTY:
    if name not in splits or splits[name] is None:
      raise DataCheckError(f"the data has no {name!r} split")
    if len(splits[name]) == 0:
      raise DataCheckError(f"split {name!r} has no examples (0 inputs)")
  train_shape = tuple(splits["train"].inputs.shape[1:])
  for name, ds in splits.items():
    if ds is None:
      continue
    shape = tuple(ds.inputs.shape[1:])
    if shape != train_shape:
      raise DataCheckError(f"split {name!r}: key 'inputs' has per-example shape {shape}, but "
                           f"train has {train_shape} (full shapes {ds.inputs.shape} vs "
                           f"{splits['train'].inputs.shape})")
    if np.issubdtype(ds.inputs.dtype, np.inexact):
      bad = _first_nonfinite(np.asarray(ds.inputs))
      if bad is not None:
        i, pos, value, count = bad
        raise DataCheckError(f"split {name!r}: key 'inputs' of example {i} is {value} at "
                             f"position {pos} ({count} examples have NaN/Inf inputs); metrics "
                             f"on it would be NaN. Clean or drop these examples.")
    for task, labels in ds.labels.items():
      labels = np.asarray(labels)
      if np.issubdtype(labels.dtype, np.inexact):
        mask = np.asarray(ds.mask[task], bool)
        flat = labels.reshape(len(labels), -1)
        rows = np.flatnonzero(mask & ~np.isfinite(flat).all(axis=1))
        if len(rows):
          raise DataCheckError(f"split {name!r}: labels of task {task!r} of example "
                               f"{int(rows[0])} are not finite ({len(rows)} labelled examples "
                               f"are); mask them out or fix them")
  train = splits["train"]
  for task, mask in train.mask.items():
    if not np.asarray(mask).any():
      raise DataCheckError(f"split 'train': task {task!r} has no labelled example (all "
                           f"{len(mask)} masked out, e.g. by a hide rate of 1): nothing to "
                           f"train it on")
