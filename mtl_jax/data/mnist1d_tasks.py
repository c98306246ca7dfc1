"""MNIST-1D (Greydanus & Kobak) with tasks derived from the digit.

The published data is regenerated offline by ``mnist1d.data.make_dataset``
with ``get_dataset_args()`` (4000 train / 1000 test signals of length 40);
nothing here downloads. Derived tasks share one input, so they give a cheap,
exactly-known multi-task problem: "digit" (10 classes), "digit_ge5" (digit
>= 5) and "parity" (digit odd).
"""

import functools
import hashlib
import json
import os
import random
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits, hide_labels

TASKS = ("digit", "digit_ge5", "parity")

# Seed of the one spatial permutation used by ``shuffle_spatial``: a constant,
# so every run, seed and split sees the same shuffled positions.
SHUFFLE_SEED = 1234

# get_dataset_args() fields that make_dataset never reads.
_UNUSED_ARGS = ("url",)


def _default_args() -> Dict[str, Any]:
  from mnist1d.data import get_dataset_args  # pulls in matplotlib: import lazily
  args = get_dataset_args(as_dict=True)
  return {k: v for k, v in args.items() if k not in _UNUSED_ARGS}


def _freeze(v):
  return tuple(v) if isinstance(v, list) else v


@functools.lru_cache(maxsize=8)
def _generate(key: Tuple[Tuple[str, Any], ...]) -> Tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test) for the frozen args ``key``.

  make_dataset reseeds the global ``random`` and ``np.random`` states; they
  are restored so building data does not change other code's randomness.
  """
  from mnist1d.data import make_dataset
  from mnist1d.utils import ObjectView
  py_state, np_state = random.getstate(), np.random.get_state()
  try:
    d = make_dataset(ObjectView(dict(key)))
  finally:
    random.setstate(py_state)
    np.random.set_state(np_state)
  out = (d["x"].astype(np.float32), d["y"].astype(np.int32),
         d["x_test"].astype(np.float32), d["y_test"].astype(np.int32))
  for a in out:
    a.flags.writeable = False  # shared by every caller of the cache
  return out


def _disk_cache_path(dataset_args: Optional[Mapping[str, Any]]) -> Optional[str]:
  """Where generated arrays are kept between processes (``$MTL_JAX_CACHE``, or
  ``~/.cache/mtl_jax``; set it to ``off`` to disable). Keyed by the overrides
  and the mnist1d version, so a cache hit needs neither the (slow) mnist1d
  import nor the ~4 s generation."""
  root = os.environ.get("MTL_JAX_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "mtl_jax"))
  if root == "off":
    return None
  from importlib.metadata import version
  key = json.dumps([version("mnist1d"), sorted((dataset_args or {}).items())], default=str)
  return os.path.join(root, f"mnist1d_{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz")


def generate(dataset_args: Optional[Mapping[str, Any]] = None) -> Tuple[np.ndarray, ...]:
  """Cached (x_train, y_train, x_test, y_test); ``dataset_args`` overrides defaults."""
  path = _disk_cache_path(dataset_args)
  if path and os.path.exists(path):
    with np.load(path) as f:
      out = tuple(f[k] for k in ("x", "y", "x_test", "y_test"))
    for a in out:
      a.flags.writeable = False
    return out
  out = _generate_in_memory(dataset_args)
  if path:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **dict(zip(("x", "y", "x_test", "y_test"), out)))
    os.replace(tmp, path)  # atomic: concurrent writers leave one whole file
  return out


def _generate_in_memory(dataset_args: Optional[Mapping[str, Any]]) -> Tuple[np.ndarray, ...]:
  args = _default_args()
  unknown = sorted(set(dataset_args or {}) - set(args))
  if unknown:
    raise ValueError(f"unknown mnist1d dataset_args {unknown}; valid: {sorted(args)}")
  args.update(dataset_args or {})
  return _generate(tuple(sorted((k, _freeze(v)) for k, v in args.items())))


def _labels(digit: np.ndarray) -> Dict[str, np.ndarray]:
  return {"digit": digit.astype(np.int32),
          "digit_ge5": (digit >= 5).astype(np.int32),
          "parity": (digit % 2).astype(np.int32)}


def _split(x: np.ndarray, digit: np.ndarray, rates: Mapping[str, float],
           rng: np.random.Generator) -> ArrayDataset:
  labels = _labels(digit)
  mask = {t: hide_labels(np.ones(len(x), bool), rates.get(t, 0.0), rng) for t in TASKS}
  return ArrayDataset(np.array(x), labels, mask)


@DATASETS.register("mnist1d")
def mnist1d(num_validation: int = 500, seed: int = 0, hide_rate: float = 0.0,
            hide_rates: Optional[Mapping[str, float]] = None, shuffle_spatial: bool = False,
            dataset_args: Optional[Mapping[str, Any]] = None,
            classes: Optional[Sequence[int]] = None,
            train_per_class: Optional[int] = None) -> DataSplits:
  """Tasks "digit", "digit_ge5" and "parity" on MNIST-1D.

  Transfer studies build upstream/downstream variants from three knobs:
  ``classes`` keeps only those digits in every split and relabels "digit" to
  their index in ``classes`` (digit_ge5 and parity keep the true digit);
  ``train_per_class`` subsamples the train split to that many examples per
  class (seeded by ``seed``: the "small target data" regime); and
  ``dataset_args`` changes the generator (noise, length, its own seed).

  The last ``num_validation`` train signals become validation; the published
  test split is ``test``. ``hide_rate`` (or per-task ``hide_rates``) hides
  train labels only, independently per task, seeded by ``seed``: evaluation
  always sees every label. ``shuffle_spatial`` applies one fixed permutation
  of positions (seed SHUFFLE_SEED) to every split: the paper's shuffled
  variant, which keeps the values but removes spatial structure.
  """
  x, y, x_test, y_test = generate(dataset_args)
  if not 0 < num_validation < len(x):
    raise ValueError(f"num_validation must be in [1, {len(x) - 1}], got {num_validation}")
  unknown = sorted(set(hide_rates or {}) - set(TASKS))
  if unknown:
    raise ValueError(f"hide_rates names unknown tasks {unknown}; tasks: {list(TASKS)}")
  if shuffle_spatial:
    perm = np.random.default_rng(SHUFFLE_SEED).permutation(x.shape[1])
    x, x_test = x[:, perm], x_test[:, perm]
  rates = {t: hide_rate for t in TASKS}
  rates.update(hide_rates or {})
  rng = np.random.default_rng(seed)
  n = len(x) - num_validation
  parts = {"train": (x[:n], y[:n]), "validation": (x[n:], y[n:]), "test": (x_test, y_test)}
  if classes is not None:
    classes = [int(c) for c in classes]
    if not classes or len(set(classes)) != len(classes) or not set(classes) <= set(range(10)):
      raise ValueError(f"classes must be distinct digits 0..9, got {classes}")
    parts = {k: (a[np.isin(b, classes)], b[np.isin(b, classes)]) for k, (a, b) in parts.items()}
  if train_per_class is not None:
    a, b = parts["train"]
    keep = []
    for c in np.unique(b):
      idx = np.flatnonzero(b == c)
      if len(idx) < train_per_class:
        raise ValueError(f"train_per_class={train_per_class} but digit {c} has only {len(idx)} "
                         f"train examples; raise dataset_args num_samples")
      keep.append(rng.choice(idx, train_per_class, replace=False))
    keep = np.sort(np.concatenate(keep))
    parts["train"] = (a[keep], b[keep])
  splits = {k: _split(a, b, rates if k == "train" else {}, rng) for k, (a, b) in parts.items()}
  if classes is not None:
    lookup = np.full(10, -1, np.int32)
    lookup[classes] = np.arange(len(classes))
    for ds in splits.values():
      ds.labels["digit"] = lookup[ds.labels["digit"]]
  return DataSplits(**splits)
