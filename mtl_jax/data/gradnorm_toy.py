"""GradNorm's synthetic regression toy (Chen et al., ICML 2018, Sec. 4).

T tasks share structure B and differ by ε_i, and σ_i sets each task's output
scale, so under equal weighting the large-σ tasks own the gradient:

    f_i(x) = σ_i · tanh((B + ε_i) x),   x ∈ R^250, f_i(x) ∈ R^100,
    B_jk ~ N(0, 10²),  ε_i,jk ~ N(0, 3.5²),  x ~ N(0, 0.01² I).

The paper does not give the input law; std 0.01 (docs/references.md, a public
re-implementation) keeps (B + ε_i) x at std ≈ 1.7, where tanh is neither
linear nor saturated. Tasks are named t0..t{T-1}, each a 100-output regression.

With ``standardize_inputs`` (default) the model sees x / x_std (unit
variance) while the targets are computed from x: plain input
standardisation, without which inputs of scale 0.01 make the ReLU trunk's
activations ~100x too small for a few thousand Adam steps to fit σ=100.
"""

from typing import Sequence, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

# Stream tags: matrices and inputs stay independent even for equal seeds.
_MATRICES, _INPUTS, _SPLIT = 0, 1, 2


def task_matrices(num_tasks: int, *, seed: int, input_dim: int = 250, output_dim: int = 100,
                  b_std: float = 10.0, eps_std: float = 3.5) -> Tuple[np.ndarray, np.ndarray]:
  """B float64 [output_dim, input_dim] and ε float64 [T, output_dim, input_dim]."""
  rng = np.random.default_rng([_MATRICES, seed])
  b = b_std * rng.standard_normal((output_dim, input_dim))
  eps = eps_std * rng.standard_normal((num_tasks, output_dim, input_dim))
  return b, eps


def gradnorm_toy_arrays(num_examples: int, sigmas: Sequence[float], *, seed: int,
                        input_dim: int = 250, output_dim: int = 100, x_std: float = 0.01,
                        b_std: float = 10.0, eps_std: float = 3.5) -> Tuple[np.ndarray, np.ndarray]:
  """Inputs float32 [N, input_dim] and targets float32 [T, N, output_dim].

  Computed in float64 and cast once, so tests can recompute rows exactly.
  """
  sigmas = np.asarray(sigmas, np.float64)
  if sigmas.ndim != 1 or len(sigmas) < 1 or not np.all(sigmas > 0):
    raise ValueError(f"sigmas must be a non-empty list of positive scales, got {sigmas.tolist()}")
  b, eps = task_matrices(len(sigmas), seed=seed, input_dim=input_dim, output_dim=output_dim,
                         b_std=b_std, eps_std=eps_std)
  x = x_std * np.random.default_rng([_INPUTS, seed]).standard_normal((num_examples, input_dim))
  ys = np.stack([s * np.tanh(x @ (b + e).T) for s, e in zip(sigmas, eps)])
  return x.astype(np.float32), ys.astype(np.float32)


@DATASETS.register("gradnorm_toy")
def gradnorm_toy(sigmas: Sequence[float] = (1.0, 100.0), num_train: int = 9000,
                 num_validation: int = 500, num_test: int = 500, seed: int = 0,
                 input_dim: int = 250, output_dim: int = 100, x_std: float = 0.01,
                 standardize_inputs: bool = True) -> DataSplits:
  """Tasks t0..t{T-1} (T = len(sigmas)), one draw of B, ε and x split at random.

  The paper's setup: 10k samples, T=2 with σ=(1, 100) or T=10 with σ spread.
  """
  n = num_train + num_validation + num_test
  x, ys = gradnorm_toy_arrays(n, tuple(sigmas), seed=seed, input_dim=input_dim,
                              output_dim=output_dim, x_std=x_std)
  if standardize_inputs:
    x = x / np.float32(x_std)
  order = np.random.default_rng([_SPLIT, seed]).permutation(n)
  bounds = np.cumsum([0, num_train, num_validation, num_test])
  splits = []
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    idx = order[lo:hi]
    labels = {f"t{i}": ys[i, idx] for i in range(len(ys))}
    splits.append(ArrayDataset(x[idx], labels, {k: np.ones(len(idx), bool) for k in labels}))
  return DataSplits(*splits)
