"""Related regression tasks with a known split of shared and private features.

For capacity studies (Caruana 1997): every task reads ``num_shared`` hidden
features common to all tasks plus ``num_private`` of its own, so a shared
layer needs ``num_shared + T * num_private`` units to serve every task while
one task needs only ``num_shared + num_private``. Narrow shared layers are
then a bottleneck for MTL, and wide ones let the shared features be learned
from T tasks' labels.

  h_j(x) = tanh(v_jᵀx),  v_j unit vectors in R^dim,  x ~ N(0, I)
  y_t = Σ_{j∈shared} a_tj h_j + Σ_{j∈private(t)} b_tj h_j + ε,  a, b ~ N(0, 1/k)

with k = num_shared + num_private, so each target has variance below 1.
"""

from typing import Dict, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

# Stream tags keep the task definition and the inputs independent.
_TASKS, _DATA = 0, 1


def task_parameters(num_tasks: int, dim: int, num_shared: int, num_private: int,
                    seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """Feature directions V [dim, num_shared + T*num_private] (unit columns) and
  readout A [T, same] (zero outside a task's shared and own private features)."""
  if num_tasks < 1 or dim < 1 or num_shared < 0 or num_private < 0:
    raise ValueError(f"bad sizes: num_tasks={num_tasks}, dim={dim}, "
                     f"num_shared={num_shared}, num_private={num_private}")
  k = num_shared + num_private
  if k == 0:
    raise ValueError("need num_shared + num_private >= 1")
  rng = np.random.default_rng([_TASKS, seed])
  total = num_shared + num_tasks * num_private
  v = rng.standard_normal((dim, total))
  v /= np.linalg.norm(v, axis=0, keepdims=True)
  a = np.zeros((num_tasks, total))
  a[:, :num_shared] = rng.standard_normal((num_tasks, num_shared)) / np.sqrt(k)
  for t in range(num_tasks):
    lo = num_shared + t * num_private
    a[t, lo:lo + num_private] = rng.standard_normal(num_private) / np.sqrt(k)
  return v, a


def related_targets(x: np.ndarray, v: np.ndarray, a: np.ndarray, noise_std: float,
                    rng: np.random.Generator) -> np.ndarray:
  """Targets [N, T] for inputs x [N, dim]."""
  y = np.tanh(x @ v) @ a.T
  return y + noise_std * rng.standard_normal(y.shape)


@DATASETS.register("related_regression")
def related_regression(num_tasks: int = 4, dim: int = 20, num_shared: int = 4,
                       num_private: int = 4, noise_std: float = 0.1, num_train: int = 1000,
                       num_validation: int = 1000, num_test: int = 1000,
                       seed: int = 0) -> DataSplits:
  """Regression tasks "t0".."t{T-1}"; all splits share the task definition (from ``seed``)."""
  v, a = task_parameters(num_tasks, dim, num_shared, num_private, seed)
  splits = []
  for k, n in enumerate((num_train, num_validation, num_test)):
    rng = np.random.default_rng([_DATA, seed, k])
    x = rng.standard_normal((n, dim))
    y = related_targets(x, v, a, noise_std, rng)
    labels: Dict[str, np.ndarray] = {f"t{t}": y[:, t].astype(np.float32)
                                     for t in range(num_tasks)}
    mask = {name: np.ones(n, bool) for name in labels}
    splits.append(ArrayDataset(x.astype(np.float32), labels, mask))
  return DataSplits(*splits)
