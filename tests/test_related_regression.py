"""related_regression: the values it produces (feature sharing pattern, targets, seeds)."""

import numpy as np
import pytest

import mtl_jax.data.related_regression  # noqa: F401  (registers the dataset)
from mtl_jax.data import build_dataset
from mtl_jax.data.related_regression import related_regression, related_targets, task_parameters


def test_readout_uses_shared_and_own_private_features_only():
  v, a = task_parameters(3, dim=10, num_shared=2, num_private=3, seed=0)
  assert v.shape == (10, 2 + 3 * 3) and a.shape == (3, 11)
  np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, rtol=1e-12)
  assert np.all(a[:, :2] != 0)  # every task reads the shared features
  for t in range(3):
    own = np.zeros(11, bool)
    own[2 + 3 * t:2 + 3 * (t + 1)] = True
    assert np.all(a[t, own] != 0) and np.all(a[t, 2:][~own[2:]] == 0)


def test_targets_are_tanh_features_read_out():
  v, a = task_parameters(2, dim=4, num_shared=1, num_private=1, seed=1)
  x = np.array([[1.0, -2.0, 0.5, 0.0]])
  y = related_targets(x, v, a, 0.0, np.random.default_rng(0))
  want = [sum(a[t, j] * np.tanh(x[0] @ v[:, j]) for j in range(3)) for t in range(2)]
  np.testing.assert_allclose(y[0], want, rtol=1e-12)


def test_noise_free_targets_match_the_generator_and_have_sane_scale():
  splits = related_regression(num_tasks=2, dim=5, noise_std=0.0, num_train=4000, seed=2)
  v, a = task_parameters(2, 5, 4, 4, seed=2)
  x = splits.train.inputs.astype(np.float64)
  y = np.tanh(x @ v) @ a.T
  for t in range(2):
    np.testing.assert_allclose(splits.train.labels[f"t{t}"], y[:, t], rtol=1e-5, atol=1e-6)
    assert 0.05 < splits.train.labels[f"t{t}"].var() < 1.0


def test_registered_seeded_and_splits_differ():
  a = build_dataset(dict(name="related_regression", num_tasks=3, num_train=50, seed=4))
  b = related_regression(num_tasks=3, num_train=50, seed=4)
  c = related_regression(num_tasks=3, num_train=50, seed=5)
  assert sorted(a.train.labels) == ["t0", "t1", "t2"]
  np.testing.assert_array_equal(a.train.inputs, b.train.inputs)
  np.testing.assert_array_equal(a.test.labels["t1"], b.test.labels["t1"])
  assert not np.array_equal(a.train.inputs, c.train.inputs)
  assert not np.array_equal(a.train.inputs[:10], a.test.inputs[:10])
  assert a.train.inputs.dtype == np.float32 and a.train.mask["t0"].all()


def test_bad_sizes_raise():
  with pytest.raises(ValueError, match="num_shared"):
    task_parameters(2, 5, 0, 0, seed=0)
