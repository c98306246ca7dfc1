"""The MMoE synthetic study: two regression tasks with controlled relatedness.

Ma et al. (KDD 2018) set the cosine ``p`` between the two tasks' weight
vectors and add the same sine non-linearity to both, so ``p`` tunes how much
the tasks share without making either easier. Recipe (docs/references.md):
orthonormal u1, u2 in R^d; w1 = c·u1, w2 = c·(p·u1 + sqrt(1-p²)·u2);
x ~ N(0, I); y_k = w_kᵀx + Σ_{i=1..m} sin(α_i·w_kᵀx + β_i) + ε with
α_i = i, β_i = (i-1)², c = 1, m = 10 and noise std 0.01.
"""

from typing import Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits, hide_labels

# Stream tags keep weights, inputs and hiding independent even when the user
# passes the same integer as several seeds.
_WEIGHTS, _DATA, _HIDE = 0, 1, 2


def task_weights(p: float, *, seed: int, dim: int = 100,
                 scale: float = 1.0) -> Tuple[np.ndarray, np.ndarray]:
  """The two weight vectors (float64 [dim]), with cosine exactly ``p``."""
  if not -1.0 <= p <= 1.0:
    raise ValueError(f"task correlation p must be in [-1, 1], got {p}")
  if dim < 2:
    raise ValueError(f"dim must be >= 2 to hold two orthonormal vectors, got {dim}")
  rng = np.random.default_rng([_WEIGHTS, seed])
  q, _ = np.linalg.qr(rng.standard_normal((dim, 2)))
  u1, u2 = q[:, 0], q[:, 1]
  w1 = scale * u1
  w2 = scale * (p * u1 + np.sqrt(1.0 - p * p) * u2)
  return w1, w2


def mmoe_pair(num_examples: int, p: float, *, weights_seed: int, data_seed: int,
              dim: int = 100, num_sines: int = 10, scale: float = 1.0,
              noise_std: float = 0.01) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Inputs and both targets: x float32 [N, dim], y1 and y2 float32 [N].

  Weights depend only on ``weights_seed``, so splits drawn with different
  ``data_seed`` describe the same two tasks.
  """
  w1, w2 = task_weights(p, seed=weights_seed, dim=dim, scale=scale)
  rng = np.random.default_rng([_DATA, data_seed])
  x = rng.standard_normal((num_examples, dim))
  alpha = np.arange(1, num_sines + 1, dtype=np.float64)
  beta = (alpha - 1.0) ** 2
  ys = []
  for w in (w1, w2):
    z = x @ w
    y = z + np.sin(alpha * z[:, None] + beta).sum(-1)
    ys.append(y + noise_std * rng.standard_normal(num_examples))
  return x.astype(np.float32), ys[0].astype(np.float32), ys[1].astype(np.float32)


@DATASETS.register("mmoe_synthetic")
def mmoe_synthetic(p: float = 0.5, num_train: int = 8000, num_validation: int = 1000,
                   num_test: int = 1000, seed: int = 0, hide_rate: float = 0.0,
                   dim: int = 100, num_sines: int = 10) -> DataSplits:
  """Regression tasks "y1" and "y2" whose weight cosine is ``p``.

  All splits share the task weights (from ``seed``) and draw their own inputs.
  ``hide_rate`` hides each task's train labels independently; validation and
  test keep every label so evaluation is over the same examples for all runs.
  """
  splits = []
  for k, n in enumerate((num_train, num_validation, num_test)):
    # 3*seed + k is distinct for every (seed, split) pair.
    x, y1, y2 = mmoe_pair(n, p, weights_seed=seed, data_seed=3 * seed + k,
                          dim=dim, num_sines=num_sines)
    labels = {"y1": y1, "y2": y2}
    mask = {name: np.ones(n, bool) for name in labels}
    if k == 0:  # hide_labels also validates the rate
      rng = np.random.default_rng([_HIDE, seed])
      mask = {name: hide_labels(m, hide_rate, rng) for name, m in mask.items()}
    splits.append(ArrayDataset(x, labels, mask))
  return DataSplits(*splits)
