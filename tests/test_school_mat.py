"""The School loader on MALSAR's ``school.mat`` layout, and the validation split
the many_tasks study selects on."""

import numpy as np
import pytest
import scipy.io

from mtl_jax.data import many_tasks as mt


def _school_mat(path, sizes, seed=0):
  """A .mat of MALSAR's layout: X, Y 1 x T cell arrays, X{t} [n_t, 28] (bias last), Y{t} [n_t, 1]."""
  rng = np.random.default_rng(seed)
  xs = np.empty((1, len(sizes)), dtype=object)
  ys = np.empty((1, len(sizes)), dtype=object)
  for t, n in enumerate(sizes):
    xs[0, t] = np.c_[rng.integers(0, 2, (n, 27)).astype(float), np.ones(n)]
    ys[0, t] = rng.normal(30, 10, (n, 1)).round(1)
  scipy.io.savemat(path, {"X": xs, "Y": ys})
  return xs, ys


def test_reads_the_malsar_mat_directly(tmp_path):
  path = str(tmp_path / "school.mat")
  xs, ys = _school_mat(path, [40, 24, 11])
  raw = scipy.io.loadmat(path)
  assert raw["X"].shape == (1, 3) and raw["X"].dtype == object  # the layout that needs ravel()
  x, y, task = mt.read_school_file(path)
  np.testing.assert_array_equal(np.bincount(task), [40, 24, 11])  # cell order = task order
  np.testing.assert_allclose(x, np.concatenate(xs.ravel()).astype(np.float32))
  np.testing.assert_allclose(y, np.concatenate([v.ravel() for v in ys.ravel()]).astype(np.float32))
  # Same numbers as the documented 30-column layout of the same data.
  flat = np.c_[task, np.concatenate(xs.ravel()), np.concatenate([v.ravel() for v in ys.ravel()])]
  np.savez(tmp_path / "school.npz", data=flat)
  x2, y2, task2 = mt.read_school_file(str(tmp_path / "school.npz"))
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  np.testing.assert_array_equal(task, task2)
  d = mt.school(path, seed=1, standardize=False)
  assert sum(int(d.train.mask[mt.task_name(t)].sum()) for t in range(3)) == 30 + 18 + 8


def test_a_bad_mat_names_the_problem(tmp_path):
  path = str(tmp_path / "bad.mat")
  xs = np.empty((1, 2), dtype=object)
  ys = np.empty((1, 2), dtype=object)
  xs[0, 0], ys[0, 0] = np.ones((5, 28)), np.ones((5, 1))
  xs[0, 1], ys[0, 1] = np.ones((5, 27)), np.ones((5, 1))  # bias column missing
  scipy.io.savemat(path, {"X": xs, "Y": ys})
  with pytest.raises(ValueError, match=r"cell 1: .*\[n, 28\].*\(5, 27\)"):
    mt.read_school_file(path)
  scipy.io.savemat(path, {"X": xs})
  with pytest.raises(ValueError, match="no variable 'Y'"):
    mt.read_school_file(path)
  (tmp_path / "junk.mat").write_bytes(b"not a mat file")
  with pytest.raises(ValueError, match="not a readable MATLAB"):
    mt.read_school_file(str(tmp_path / "junk.mat"))


def test_validation_is_carved_from_train_and_test_is_unchanged():
  base = mt.many_tasks(seed=3, num_tasks=6, standardize=False)
  d = mt.many_tasks(seed=3, num_tasks=6, standardize=False, validation_fraction=0.2)
  np.testing.assert_array_equal(d.test.inputs, base.test.inputs)  # same test rows
  for t in range(6):
    n = mt.task_name(t)
    ntr, nva = int(d.train.mask[n].sum()), int(d.validation.mask[n].sum())
    assert ntr + nva == int(base.train.mask[n].sum())
    assert nva == max(min(round(0.2 * (ntr + nva)), ntr + nva - 1), 1)
  # Train and validation rows partition the base train rows (no row in both).
  rows = lambda ds: {tuple(r) for r in ds.inputs.round(6)}  # noqa: E731
  assert not rows(d.train) & rows(d.validation)
  assert rows(d.train) | rows(d.validation) == rows(base.train)
  assert base.validation is base.test  # without a fraction: the protocol's (no selection)
  with pytest.raises(ValueError, match="validation_fraction"):
    mt.many_tasks(seed=0, num_tasks=3, validation_fraction=1.0)
