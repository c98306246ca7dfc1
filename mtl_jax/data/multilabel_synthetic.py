"""Four correlated binary tasks from one latent scene, for missing-label studies.

A driving-scene caricature: "pedestrian", "car", "stop_sign", "light" are
all read off the same random 2-layer generator h = tanh(A x / sqrt(d)) over
x ~ N(0, I_d). Task k's score is s_k = b_k . h with b_k = rho b0 + sqrt(1 -
rho^2) e_k (unit vectors), so the scores share a direction and the labels are
positively correlated (more so for larger ``rho``); y_k = 1[s_k + noise >
quantile], the quantile set so each task has its own base rate.

``hide_rate`` hides each train label independently. ``missing`` says what
the train split does with a hidden label:
  "mask"     mask False (the library default: the loss ignores it)
  "drop"     drop every example with any hidden label (complete cases only)
  "negative" label 0 with mask True (missing treated as absent)
Validation and test keep every label.
"""

from typing import Dict, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits, hide_labels

TASKS = ("pedestrian", "car", "stop_sign", "light")
BASE_RATES = (0.3, 0.5, 0.15, 0.25)  # fraction of positives per task
MISSING = ("mask", "drop", "negative")
_GENERATOR, _DATA, _HIDE = 0, 1, 2


def _generator(seed: int, dim: int, latent: int, rho: float):
  rng = np.random.default_rng([_GENERATOR, seed])
  a = rng.standard_normal((dim, latent))
  b0 = rng.standard_normal(latent)
  b0 /= np.linalg.norm(b0)
  e = rng.standard_normal((len(TASKS), latent))
  e -= np.outer(e @ b0, b0)  # orthogonal to the shared direction
  e /= np.linalg.norm(e, axis=1, keepdims=True)
  b = rho * b0 + np.sqrt(1.0 - rho ** 2) * e  # [tasks, latent], unit rows
  return a, b


def scene_labels(num_examples: int, *, generator_seed: int, data_seed: int, dim: int = 20,
                 latent: int = 16, rho: float = 0.8, noise_std: float = 0.3
                 ) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """x float32 [N, dim] and {task: int32 [N] in {0, 1}}.

  Thresholds are the population quantiles of each score (estimated on 20k
  draws of the same generator), so base rates do not depend on N.
  """
  a, b = _generator(generator_seed, dim, latent, rho)

  def scores(x, rng):
    h = np.tanh(x @ a / np.sqrt(dim))
    s = h @ b.T / np.std(h @ b.T, axis=0)  # [N, tasks], unit scale
    return s + noise_std * rng.standard_normal(s.shape)

  ref_x = np.random.default_rng([_GENERATOR, generator_seed, 1]).standard_normal((20_000, dim))
  ref = scores(ref_x, np.random.default_rng([_GENERATOR, generator_seed, 2]))
  thresholds = np.quantile(ref, 1.0 - np.asarray(BASE_RATES), axis=0).diagonal()
  rng = np.random.default_rng([_DATA, data_seed])
  x = rng.standard_normal((num_examples, dim))
  y = (scores(x, rng) > thresholds).astype(np.int32)
  return x.astype(np.float32), {k: y[:, i] for i, k in enumerate(TASKS)}


def apply_missing(ds: ArrayDataset, missing: str) -> ArrayDataset:
  """Turns a train split with hidden labels into the ``missing`` variant."""
  if missing not in MISSING:
    raise ValueError(f"missing must be one of {list(MISSING)}, got {missing!r}")
  if missing == "mask":
    return ds
  if missing == "negative":
    labels = {k: np.where(ds.mask[k], v, 0).astype(v.dtype) for k, v in ds.labels.items()}
    return ArrayDataset(ds.inputs, labels, {k: np.ones(len(ds), bool) for k in ds.labels})
  complete = np.logical_and.reduce([ds.mask[k] for k in ds.labels])
  if not complete.any():
    raise ValueError("missing='drop' leaves no example with every label; lower hide_rate or "
                     "raise num_train")
  return ds.subset(np.flatnonzero(complete))


@DATASETS.register("multilabel_synthetic")
def multilabel_synthetic(seed: int = 0, num_train: int = 5000, num_validation: int = 2000,
                         num_test: int = 5000, hide_rate: float = 0.0, missing: str = "mask",
                         dim: int = 20, latent: int = 16, rho: float = 0.8,
                         noise_std: float = 0.3) -> DataSplits:
  """Binary tasks ``TASKS``; ``seed`` drives the generator, the inputs and the hiding."""
  splits = []
  for k, n in enumerate((num_train, num_validation, num_test)):
    x, labels = scene_labels(n, generator_seed=seed, data_seed=3 * seed + k, dim=dim,
                             latent=latent, rho=rho, noise_std=noise_std)
    mask = {t: np.ones(n, bool) for t in TASKS}
    if k == 0:
      rng = np.random.default_rng([_HIDE, seed])
      mask = {t: hide_labels(m, hide_rate, rng) for t, m in mask.items()}
      labels = {t: np.where(mask[t], labels[t], -1).astype(np.int32) for t in TASKS}
    ds = ArrayDataset(x, labels, mask)
    splits.append(apply_missing(ds, missing) if k == 0 else ds)
  return DataSplits(*splits)
