"""Many small regression tasks in one input space: a School-like generator and
a loader for the real School data (139 schools, 15,362 students).

Every task is its own head; an example is labelled only for its own task
(``mask[t]`` is True exactly on task t's rows), so the task id reaches the
model through the masks alone. ``pooled=True`` instead gives one task
``"score"`` labelled everywhere: the "one model for all schools" baseline.

Protocol (docs/references.md, School data): 10 random splits, 75/25 within each
task; the split seed is the dataset's ``seed`` (set it to the run seed).
Explained variance there is pooled over all test points, EV = 1 - SSE/SST
with SST around the pooled test mean; ``pooled_explained_variance`` computes
it from per-task MSEs and the test split, so no predictions need saving.
"""

import os
from typing import Dict, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

NUM_FEATURES = 27  # School: 27 features, plus a bias column of ones
# Stream tags keep the population, the splits and the targets' noise apart.
_POPULATION, _SPLIT, _VALIDATION = 0, 1, 2


def task_name(t: int) -> str:
  """Name of task index ``t`` (the t-th school in ascending id order)."""
  return f"t{t:03d}"


def random_effects_tasks(num_tasks: int = 139, min_examples: int = 30, max_examples: int = 200,
                         num_features: int = NUM_FEATURES, slope_std: float = 0.3,
                         intercept_std: float = 0.8, noise_std: float = 1.3, seed: int = 0
                         ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """A random-effects population: w_t = w0 + delta_t, y = w_t . [x, 1] + noise.

  Returns x float32 [N, F+1] (last column the bias, 1), y float32 [N], task
  int [N] and the true weights float64 [T, F+1]. x ~ N(0, I); w0 ~ N(0, 1/F)
  per feature (w0 . x has variance ~1) with intercept ~ N(0, 1); delta_t ~
  N(0, slope_std^2 / F) per feature and N(0, intercept_std^2) on the
  intercept: schools differ mostly in level, a little in slopes. Sizes n_t are
  uniform in [min_examples, max_examples] (School: 22-251, mean 110). With the
  defaults, on one 75/25 split: true weights EV ~44%, pooled least squares
  ~23%, independent ridge ~30%: School's ordering (pooled <~ independent <
  shared), published EVs 30-37%.
  """
  if not 1 <= min_examples <= max_examples:
    raise ValueError(f"need 1 <= min_examples <= max_examples, got {min_examples}, {max_examples}")
  rng = np.random.default_rng([_POPULATION, seed])
  f = num_features
  scale = np.r_[np.full(f, 1.0 / np.sqrt(f)), 1.0]
  w0 = rng.standard_normal(f + 1) * scale
  dev = np.r_[np.full(f, slope_std / np.sqrt(f)), intercept_std]
  w = w0 + rng.standard_normal((num_tasks, f + 1)) * dev
  sizes = rng.integers(min_examples, max_examples + 1, num_tasks)
  task = np.repeat(np.arange(num_tasks), sizes)
  x = np.c_[rng.standard_normal((len(task), f)), np.ones(len(task))]
  y = np.einsum("nf,nf->n", x, w[task]) + noise_std * rng.standard_normal(len(task))
  return x.astype(np.float32), y.astype(np.float32), task, w


def read_school_file(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads the School layout; returns x float32 [N, 28], y float32 [N], task int [N].

  Layout (one row per student, 30 numeric columns):
    column 0      school id (integer; 139 distinct ids in the real data, any
                  order, any values: task t is the t-th smallest id)
    columns 1-27  the 27 features
    column 28     bias column (all ones)
    column 29     exam score (the target)
  As ``.csv`` (comma-separated; one optional header line, skipped when its
  first field is not a number) or ``.npz`` holding that matrix as ``data``.
  Or the MALSAR ``school.mat`` itself (``read_school_mat``).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"School file {path!r} not found; the data is not redistributed, "
                            "pass its path (layout in mtl_jax/data/many_tasks.py)")
  if path.endswith(".mat"):
    return read_school_mat(path)
  if path.endswith(".npz"):
    with np.load(path) as z:
      data = np.asarray(z["data"], np.float64)
  else:
    with open(path) as fh:
      first = fh.readline().split(",")[0].strip()
    try:
      float(first)
      skip = 0
    except ValueError:
      skip = 1
    data = np.loadtxt(path, delimiter=",", skiprows=skip, ndmin=2)
  want = 1 + NUM_FEATURES + 1 + 1
  if data.ndim != 2 or data.shape[1] != want:
    raise ValueError(f"{path}: expected {want} columns (school id, 27 features, bias, score), "
                     f"got shape {data.shape}")
  ids = data[:, 0]
  if np.any(ids != np.round(ids)):
    raise ValueError(f"{path}: column 0 (school id) must hold integers")
  _, task = np.unique(ids.astype(np.int64), return_inverse=True)
  return data[:, 1:-1].astype(np.float32), data[:, -1].astype(np.float32), task


def read_school_mat(path: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads MALSAR's ``school.mat``: X, Y are 1 x 139 cell arrays, X{t} [n_t, 28]
  (27 features, bias column last), Y{t} [n_t, 1]; task t is cell t.

  ``scipy.io.loadmat`` returns the cells as object arrays of shape (1, T),
  hence the ``ravel()``.
  """
  import scipy.io  # a dependency of JAX
  try:
    mat = scipy.io.loadmat(path)
  except Exception as e:  # scipy raises several types for a bad file
    raise ValueError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from e
  for key in ("X", "Y"):
    if key not in mat:
      raise ValueError(f"{path}: no variable {key!r} (has {sorted(k for k in mat if k[0] != '_')})")
  xs, ys = mat["X"].ravel(), mat["Y"].ravel()
  if len(xs) != len(ys):
    raise ValueError(f"{path}: X has {len(xs)} cells, Y has {len(ys)}")
  want = NUM_FEATURES + 1
  x_all, y_all, task = [], [], []
  for t, (x, y) in enumerate(zip(xs, ys)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64).ravel()
    if x.ndim != 2 or x.shape[1] != want or len(y) != len(x):
      raise ValueError(f"{path}: cell {t}: X{{t}} must be [n, {want}] (27 features, bias) and "
                       f"Y{{t}} [n, 1], got {x.shape} and {np.shape(mat['Y'].ravel()[t])}")
    x_all.append(x)
    y_all.append(y)
    task.append(np.full(len(y), t))
  return (np.concatenate(x_all).astype(np.float32), np.concatenate(y_all).astype(np.float32),
          np.concatenate(task))


def split_within_tasks(task: np.ndarray, train_fraction: float, seed: int, stream: int = _SPLIT
                       ) -> Tuple[np.ndarray, np.ndarray]:
  """Train/test indices: each task's rows shuffled with ``seed``, the first
  round(train_fraction * n_t) (at least 1, at most n_t - 1) to train."""
  rng = np.random.default_rng([stream, seed])
  train, test = [], []
  for t in range(int(task.max()) + 1):
    rows = rng.permutation(np.flatnonzero(task == t))
    k = min(max(int(round(train_fraction * len(rows))), 1), len(rows) - 1)
    train.append(rows[:k])
    test.append(rows[k:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _arrays(x, y, task, num_tasks, pooled) -> ArrayDataset:
  if pooled:
    return ArrayDataset(x, {"score": y}, {"score": np.ones(len(y), bool)})
  labels, mask = {}, {}
  for t in range(num_tasks):
    m = task == t
    mask[task_name(t)] = m
    labels[task_name(t)] = np.where(m, y, 0.0).astype(np.float32)
  return ArrayDataset(x, labels, mask)


def make_splits(x, y, task, seed: int, train_fraction: float = 0.75, pooled: bool = False,
                standardize: bool = True, validation_fraction: float = 0.0) -> DataSplits:
  """DataSplits from a whole population: 75/25 within each task with ``seed``.

  ``standardize`` z-scores the target and the non-constant features with the
  train split's pooled mean/std (EV is unchanged by an affine map of y). The
  protocol has no validation split: with ``validation_fraction`` 0,
  ``validation`` is the test split (select nothing on it). With f > 0 a
  fraction f of each task's train rows becomes ``validation`` (and leaves
  train; the test split is unchanged), for choosing hyperparameters.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
  num_tasks = int(task.max()) + 1
  tr, te = split_within_tasks(task, train_fraction, seed)
  va = te
  if validation_fraction > 0:
    keep, held = split_within_tasks(task[tr], 1.0 - validation_fraction, seed, _VALIDATION)
    tr, va = tr[keep], tr[held]
  x, y = x.astype(np.float32).copy(), y.astype(np.float32).copy()
  if standardize:
    mu, sd = x[tr].mean(0), x[tr].std(0)
    cols = sd > 1e-8  # leaves the bias column alone
    x[:, cols] = (x[:, cols] - mu[cols]) / sd[cols]
    y = (y - y[tr].mean()) / y[tr].std()
  train = _arrays(x[tr], y[tr], task[tr], num_tasks, pooled)
  test = _arrays(x[te], y[te], task[te], num_tasks, pooled)
  validation = _arrays(x[va], y[va], task[va], num_tasks, pooled) if validation_fraction else test
  return DataSplits(train, validation, test)


@DATASETS.register("many_tasks")
def many_tasks(seed: int = 0, num_tasks: int = 139, min_examples: int = 30,
               max_examples: int = 200, slope_std: float = 0.3, intercept_std: float = 0.8,
               noise_std: float = 1.3,
               population_seed: int = 0, train_fraction: float = 0.75, pooled: bool = False,
               standardize: bool = True, validation_fraction: float = 0.0) -> DataSplits:
  """School-like generated tasks ``t000``..; ``seed`` picks the split only.

  The population (weights, inputs, targets) comes from ``population_seed`` so
  that, as with a real data file, the 10 splits reshuffle one fixed data set.
  """
  x, y, task, _ = random_effects_tasks(num_tasks, min_examples, max_examples,
                                       slope_std=slope_std, intercept_std=intercept_std,
                                       noise_std=noise_std,
                                       seed=population_seed)
  return make_splits(x, y, task, seed, train_fraction, pooled, standardize, validation_fraction)


@DATASETS.register("school")
def school(path: str, seed: int = 0, train_fraction: float = 0.75, pooled: bool = False,
           standardize: bool = True, validation_fraction: float = 0.0) -> DataSplits:
  """The School data from ``path`` (layout: ``read_school_file``, or MALSAR's
  ``school.mat``); tasks ``t000``.."""
  x, y, task = read_school_file(path)
  return make_splits(x, y, task, seed, train_fraction, pooled, standardize, validation_fraction)


def pooled_explained_variance(test: ArrayDataset, mse: Dict[str, float]) -> float:
  """EV over all test points: 1 - sum_t n_t MSE_t / sum_i (y_i - mean y)^2.

  ``mse`` is the per-task test MSE a run reports (a mean over that task's
  labelled examples); n_t and the pooled variance come from ``test``. For the
  pooled variant (one task "score") this equals that task's ``r2``.
  """
  ys = np.concatenate([test.labels[k][test.mask[k]] for k in test.labels])
  sst = float(np.sum((ys - ys.mean()) ** 2))
  sse = sum(float(mse[k]) * int(test.mask[k].sum()) for k in test.labels)
  return 1.0 - sse / sst
