"""many_tasks / school and multilabel_synthetic: values, masks, splits, the file layout."""

import numpy as np
import pytest

from mtl_jax.data import many_tasks as mt
from mtl_jax.data import multilabel_synthetic as ml

# ---------------------------------------------------------------- many tasks


def test_generator_shapes_and_values():
  x, y, task, w = mt.random_effects_tasks(num_tasks=20, min_examples=30, max_examples=60, seed=3)
  sizes = np.bincount(task, minlength=20)
  assert x.shape == (len(y), 28) and x.dtype == np.float32 and y.dtype == np.float32
  assert sizes.min() >= 30 and sizes.max() <= 60
  np.testing.assert_array_equal(x[:, -1], 1.0)  # bias column
  # Related but different: deviations from the mean task are smaller than the
  # shared part, and nonzero.
  dev = w - w.mean(0)
  assert 0 < np.linalg.norm(dev[:, :-1]) / np.sqrt(20) < np.linalg.norm(w.mean(0)[:-1])
  # y = w_t . x + N(0, 1.3^2): residuals have the noise std.
  resid = y - np.einsum("nf,nf->n", x, w[task])
  assert abs(resid.std() - 1.3) < 0.1
  again = mt.random_effects_tasks(num_tasks=20, min_examples=30, max_examples=60, seed=3)
  np.testing.assert_array_equal(again[1], y)


def _check_one_task_per_example(ds):
  m = np.stack([ds.mask[mt.task_name(t)] for t in range(len(ds.mask))])
  np.testing.assert_array_equal(m.sum(0), 1)  # exactly one task labelled per example
  return m


def test_dataset_masks_and_split_per_task():
  d = mt.many_tasks(seed=4, num_tasks=12, standardize=False)
  x, y, task, _ = mt.random_effects_tasks(num_tasks=12)
  mtr, mte = _check_one_task_per_example(d.train), _check_one_task_per_example(d.test)
  for t in range(12):
    n = int((task == t).sum())
    k = int(round(0.75 * n))
    assert mtr[t].sum() == k and mte[t].sum() == n - k
  assert len(d.train) + len(d.test) == len(y)
  # The labels are the generated targets, each in its own task only.
  name = mt.task_name(5)
  got = np.sort(np.concatenate([d.train.labels[name][d.train.mask[name]],
                                d.test.labels[name][d.test.mask[name]]]))
  np.testing.assert_allclose(got, np.sort(y[task == 5]))
  # Split seed changes the split, not the population.
  d2 = mt.many_tasks(seed=5, num_tasks=12, standardize=False)
  assert len(d2.train) == len(d.train)
  assert not np.array_equal(d2.train.inputs, d.train.inputs)
  np.testing.assert_allclose(np.sort(np.concatenate([d2.train.inputs[:, 0], d2.test.inputs[:, 0]])),
                             np.sort(x[:, 0]))


def test_pooled_variant_and_explained_variance():
  d = mt.many_tasks(seed=0, num_tasks=10, pooled=True)
  assert d.train.task_names == ("score",) and d.train.mask["score"].all()
  per = mt.many_tasks(seed=0, num_tasks=10)
  # Predicting 0 (the standardised train mean) per task: pooled EV from per-task
  # MSEs equals 1 - MSE/Var over all test points, computed directly.
  mse = {k: float(np.mean(per.test.labels[k][per.test.mask[k]] ** 2)) for k in per.test.labels}
  ys = d.test.labels["score"]
  direct = 1 - np.mean(ys ** 2) / np.var(ys)
  np.testing.assert_allclose(mt.pooled_explained_variance(per.test, mse), direct, rtol=1e-5)
  np.testing.assert_allclose(
      mt.pooled_explained_variance(d.test, {"score": float(np.mean(ys ** 2))}), direct, rtol=1e-5)


@pytest.mark.parametrize("fmt", ["csv", "npz"])
def test_school_loader_on_a_generated_file(tmp_path, fmt):
  # The documented layout: school id, 27 features, bias (1), score; ids arbitrary.
  rng = np.random.default_rng(0)
  ids = np.repeat([107, 3, 55], [40, 24, 11])
  feats = rng.integers(0, 2, (len(ids), 27)).astype(float)
  score = rng.normal(30, 10, len(ids)).round(1)
  data = np.c_[ids, feats, np.ones(len(ids)), score]
  path = tmp_path / f"school.{fmt}"
  if fmt == "csv":
    header = ",".join(["school"] + [f"f{i}" for i in range(27)] + ["bias", "score"])
    np.savetxt(path, data, delimiter=",", header=header, comments="", fmt="%g")
  else:
    np.savez(path, data=data)
  x, y, task = mt.read_school_file(str(path))
  np.testing.assert_array_equal(np.bincount(task), [24, 11, 40])  # ascending ids 3, 55, 107
  np.testing.assert_allclose(y, score.astype(np.float32))
  np.testing.assert_array_equal(x[:, -1], 1.0)
  d = mt.school(str(path), seed=2, standardize=False)
  mtr = np.stack([d.train.mask[mt.task_name(t)] for t in range(3)])
  mte = np.stack([d.test.mask[mt.task_name(t)] for t in range(3)])
  np.testing.assert_array_equal(mtr.sum(1), [18, 8, 30])  # round(0.75 n)
  np.testing.assert_array_equal(mte.sum(1), [6, 3, 10])
  np.testing.assert_array_equal(mtr.sum(0), 1)
  with pytest.raises(ValueError, match="30 columns"):
    bad = tmp_path / "bad.npz"
    np.savez(bad, data=data[:, :-1])
    mt.read_school_file(str(bad))
  with pytest.raises(FileNotFoundError, match="not redistributed"):
    mt.read_school_file(str(tmp_path / "missing.csv"))


# ---------------------------------------------------------------- multilabel


def test_multilabel_rates_correlations_and_hiding():
  d = ml.multilabel_synthetic(seed=1, num_train=4000, num_validation=10, num_test=20000,
                              hide_rate=0.4)
  y = np.stack([d.test.labels[t] for t in ml.TASKS])
  np.testing.assert_allclose(y.mean(1), ml.BASE_RATES, atol=0.03)
  corr = np.corrcoef(y)[np.triu_indices(4, 1)]
  assert corr.min() > 0.1, corr  # one latent scene: all pairs positively correlated
  for t in ml.TASKS:
    assert abs(d.train.mask[t].mean() - 0.6) < 0.03
    assert d.test.mask[t].all()
    lab = d.train.labels[t]
    assert set(np.unique(lab[d.train.mask[t]])) <= {0, 1}
  # Hiding is independent across tasks: P(all four kept) ~ 0.6^4.
  complete = np.logical_and.reduce([d.train.mask[t] for t in ml.TASKS])
  assert abs(complete.mean() - 0.6 ** 4) < 0.03


def test_multilabel_missing_variants():
  kw = dict(seed=2, num_train=3000, num_validation=10, num_test=10, hide_rate=0.5)
  masked = ml.multilabel_synthetic(**kw).train
  drop = ml.multilabel_synthetic(missing="drop", **kw).train
  neg = ml.multilabel_synthetic(missing="negative", **kw).train
  complete = np.logical_and.reduce([masked.mask[t] for t in ml.TASKS])
  assert len(drop) == complete.sum() and all(drop.mask[t].all() for t in ml.TASKS)
  np.testing.assert_array_equal(drop.inputs, masked.inputs[complete])
  for t in ml.TASKS:
    assert neg.mask[t].all()
    np.testing.assert_array_equal(neg.labels[t][~masked.mask[t]], 0)
    np.testing.assert_array_equal(neg.labels[t][masked.mask[t]], masked.labels[t][masked.mask[t]])
  with pytest.raises(ValueError, match="leaves no example"):
    ml.multilabel_synthetic(seed=0, num_train=50, num_validation=5, num_test=5, hide_rate=1.0,
                            missing="drop")
  with pytest.raises(ValueError, match="missing must be one of"):
    ml.multilabel_synthetic(num_train=10, num_validation=5, num_test=5, missing="zero")
