"""``dense_shapes``: exact, deterministic, fast, in the batch format of the dense kinds.

Exactness is checked from the outputs alone: every visible surface is a
plane, so the 3-D points z·(u, v, 1) of the pixels sharing one normal must
satisfy n·X = const (depth and normals describe the same plane), and the
normals are unit vectors facing the camera.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mtl_jax import losses, metrics, tasks
from mtl_jax.data import build_dataset
from mtl_jax.data import dense_shapes as ds

SIZE = 16
SPECS = tasks.specs_from_config([dict(name="segmentation", kind="segmentation", num_outputs=6),
                                 dict(name="depth", kind="depth"),
                                 dict(name="normal", kind="normals", num_outputs=3)])


@pytest.fixture(scope="module")
def splits():
  return build_dataset(dict(name="dense_shapes", size=SIZE, num_train=64, num_validation=16,
                            num_test=8, seed=3))


def _rays(size):
  c = (np.arange(size) + 0.5) / size * 2 - 1
  u, v = np.meshgrid(c, c)
  return np.stack([u, v, np.ones_like(u)], -1)


def test_depth_and_normals_describe_the_same_planes(splits):
  tr = splits.train
  rays = _rays(SIZE)
  n, z, seg = tr.labels["normal"], tr.labels["depth"], tr.labels["segmentation"]
  np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
  assert np.all((n * rays).sum(-1) < 0)  # facing the camera along every ray
  assert np.all(z > 0) and np.all(np.isfinite(z))
  checked = 0
  for i in range(8):
    points = z[i][..., None] * rays
    keys = np.round(n[i], 4).reshape(-1, 3)
    for key in np.unique(keys, axis=0):
      sel = np.all(keys == key, -1)
      if sel.sum() < 3:
        continue
      offset = points.reshape(-1, 3)[sel] @ n[i].reshape(-1, 3)[sel][0]
      np.testing.assert_allclose(offset, offset.mean(), rtol=1e-4, atol=1e-4)
      assert len(np.unique(seg[i].reshape(-1)[sel])) == 1  # one plane, one class
      checked += 1
  assert checked >= 8 * 3  # wall, ground and at least one object per image


def test_labels_fit_the_kinds_and_classes_cover_the_range(splits):
  for split in (splits.train, splits.validation, splits.test):
    tasks.validate_batch(SPECS, split.labels, split.mask, inputs=split.inputs)
    assert split.inputs.shape[1:] == (SIZE, SIZE, 3) and split.inputs.dtype == np.float32
  assert set(np.unique(splits.train.labels["segmentation"])) == set(range(6))
  assert len(splits.train) == 64 and len(splits.validation) == 16 and len(splits.test) == 8


def test_deterministic_given_the_seed_and_splits_differ():
  kw = dict(size=8, num_train=300, num_validation=3, num_test=0)
  a, b, c = (ds.dense_shapes(seed=s, **kw) for s in (1, 1, 2))
  for t in ds.TASKS:
    assert np.array_equal(a.train.labels[t], b.train.labels[t])
  assert np.array_equal(a.train.inputs, b.train.inputs)
  assert not np.array_equal(a.train.inputs, c.train.inputs)
  assert not np.array_equal(a.train.inputs[:3], a.validation.inputs)
  assert a.test is None


def test_missing_pixels_and_hidden_labels():
  s = ds.dense_shapes(size=SIZE, num_train=50, num_validation=5, num_test=0, missing_rate=0.2,
                      hide_rate=0.5, seed=0)
  tr = s.train
  share = {"segmentation": (tr.labels["segmentation"] == -1).mean(),
           "depth": (tr.labels["depth"] == 0).mean(),
           "normal": (np.abs(tr.labels["normal"]).sum(-1) == 0).mean()}
  for t, v in share.items():
    assert 0.17 < v < 0.23, (t, v)
  assert 0.3 < tr.mask["depth"].mean() < 0.7 and s.validation.mask["depth"].all()
  tasks.validate_batch(SPECS, tr.labels, tr.mask)


def test_bad_options_are_clear_errors():
  for kw, msg in ((dict(size=2), "size=2"), (dict(num_classes=2), "num_classes=2"),
                  (dict(missing_rate=1.0), "missing_rate"), (dict(num_train=0), "num_train"),
                  (dict(hide_rate=-0.1), "hide_rate"), (dict(size=8.5), "size=8.5")):
    with pytest.raises(ValueError, match=msg):
      ds.dense_shapes(**{"num_train": 2, "num_validation": 1, **kw})


def test_1000_images_at_32_render_in_well_under_a_second_of_cpu():
  t = time.process_time()
  s = ds.dense_shapes(size=32, num_train=1000, num_validation=1, num_test=0)
  assert len(s.train) == 1000
  assert time.process_time() - t < 1.0


def test_a_per_pixel_linear_model_learns_the_classes_from_colour(splits):
  """The scenes are learnable from the image: a 1x1 convolution (softmax regression on RGB)
  beats always predicting the most frequent class, with the kinds' loss and metrics."""
  tr, va = splits.train, splits.validation
  spec = SPECS[0]
  x, y, m = (jnp.asarray(a) for a in (tr.inputs, tr.labels["segmentation"],
                                      tr.mask["segmentation"]))
  params = {"w": jnp.zeros((3, 6)), "b": jnp.zeros(6)}
  apply = lambda p, x: x @ p["w"] + p["b"]  # noqa: E731
  opt = optax.adam(0.1)
  state = opt.init(params)

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(lambda p: losses.task_loss(spec, apply(p, x), y, m))(p)
    upd, s = opt.update(g, s)
    return optax.apply_updates(p, upd), s, loss

  first = None
  for _ in range(60):
    params, state, loss = step(params, state)
    first = float(loss) if first is None else first
  assert float(loss) < 0.8 * first
  res = metrics.task_metrics(spec, np.asarray(apply(params, jnp.asarray(va.inputs))),
                             va.labels["segmentation"], va.mask["segmentation"])
  majority = np.bincount(va.labels["segmentation"].ravel()).max() / va.labels["segmentation"].size
  assert res["pixel_accuracy"] > majority + 0.05 and res["miou"] > 0.2  # majority: ~0.07
