"""Dataset builders: the values they produce, not only their shapes."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_jax.data import build_dataset
from mtl_jax.data.mnist1d_tasks import mnist1d
from mtl_jax.data.synthetic import mmoe_pair, mmoe_synthetic, task_weights
from mtl_jax.data.tfds_source import tfds_dataset

# ---------------------------------------------------------------- MMoE synthetic


@pytest.mark.parametrize("p,published", [(0.0, 0.00), (0.5, 0.22), (0.9, 0.46), (1.0, 1.00)])
def test_mmoe_label_correlation_matches_published(p, published):
  # Ma et al.'s generator: Pearson r of the labels (n=20k). Tolerance 0.05 is
  # ~5 standard errors of a 3-seed mean (per-seed std is ~0.01).
  rs = [np.corrcoef(*mmoe_pair(20000, p, weights_seed=s, data_seed=10 + s)[1:])[0, 1]
        for s in range(3)]
  assert abs(np.mean(rs) - published) < 0.05, rs


@pytest.mark.parametrize("p", [-0.7, 0.0, 0.3, 1.0])
def test_mmoe_weights_have_cosine_p(p):
  w1, w2 = task_weights(p, seed=3, dim=100, scale=2.0)
  np.testing.assert_allclose([np.linalg.norm(w1), np.linalg.norm(w2)], [2.0, 2.0], rtol=1e-6)
  np.testing.assert_allclose(w1 @ w2 / 4.0, p, atol=1e-6)


def _fit_linear(x, y):
  return np.linalg.lstsq(x.astype(np.float64), y.astype(np.float64), rcond=None)[0]


def test_mmoe_seeds():
  a = mmoe_pair(500, 0.5, weights_seed=1, data_seed=2)
  b = mmoe_pair(500, 0.5, weights_seed=1, data_seed=2)
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)
  assert all(u.dtype == np.float32 for u in a)
  assert a[0].shape == (500, 100) and a[1].shape == a[2].shape == (500,)
  c = mmoe_pair(500, 0.5, weights_seed=1, data_seed=3)
  assert not np.allclose(a[0], c[0])
  # Without sines and noise y_k = w_kᵀx, so least squares recovers the weights:
  # the same for both data seeds, and those of task_weights.
  w1, w2 = task_weights(0.5, seed=1)
  for data_seed in (2, 3):
    x, y1, y2 = mmoe_pair(500, 0.5, weights_seed=1, data_seed=data_seed,
                          num_sines=0, noise_std=0.0)
    np.testing.assert_allclose(_fit_linear(x, y1), w1, atol=1e-4)
    np.testing.assert_allclose(_fit_linear(x, y2), w2, atol=1e-4)


def test_mmoe_builder_splits_share_weights_not_inputs():
  s = mmoe_synthetic(p=0.3, num_train=1000, num_validation=500, num_test=500, seed=4, num_sines=0)
  assert (len(s.train), len(s.validation), len(s.test)) == (1000, 500, 500)
  assert s.train.task_names == ("y1", "y2")
  assert not np.allclose(s.train.inputs[:500], s.validation.inputs)
  assert not np.allclose(s.validation.inputs, s.test.inputs)
  w = task_weights(0.3, seed=4)
  for split in (s.train, s.validation, s.test):
    assert all(m.dtype == np.bool_ and m.all() for m in split.mask.values())
    for k, name in enumerate(("y1", "y2")):  # noise 0.01: weights to ~1e-3
      np.testing.assert_allclose(_fit_linear(split.inputs, split.labels[name]), w[k], atol=5e-3)


def test_mmoe_hide_rate_hides_train_labels_independently():
  s = mmoe_synthetic(num_train=20000, hide_rate=0.3, seed=1)
  m1, m2 = s.train.mask["y1"], s.train.mask["y2"]
  # Binomial std at n=20000 is ~0.003.
  assert abs((~m1).mean() - 0.3) < 0.02 and abs((~m2).mean() - 0.3) < 0.02
  assert abs((~m1 & ~m2).mean() - 0.09) < 0.02  # independent across tasks
  assert all(m.all() for split in (s.validation, s.test) for m in split.mask.values())


@pytest.mark.parametrize("p", [1.5, -1.01, float("nan")])
def test_mmoe_bad_p_raises(p):
  with pytest.raises(ValueError, match="p must be in"):
    mmoe_pair(10, p, weights_seed=0, data_seed=0)
  with pytest.raises(ValueError, match="p must be in"):
    mmoe_synthetic(p=p, num_train=10, num_validation=10, num_test=10)


# ---------------------------------------------------------------- MNIST-1D


@pytest.fixture(scope="module")
def m1d():
  return mnist1d()


def test_mnist1d_shapes_and_labels(m1d):
  for split, n in ((m1d.train, 3500), (m1d.validation, 500), (m1d.test, 1000)):
    assert split.inputs.shape == (n, 40) and split.inputs.dtype == np.float32
    assert split.task_names == ("digit", "digit_ge5", "parity")
    for name, y in split.labels.items():
      assert y.shape == (n,) and y.dtype == np.int32, name
      assert split.mask[name].dtype == np.bool_ and split.mask[name].all()
    assert set(np.unique(split.labels["digit"])) == set(range(10))
  # Classes are balanced by construction (500 per digit overall).
  assert np.bincount(m1d.train.labels["digit"]).min() > 300


@pytest.mark.parametrize("hide_rate", [0.0, 0.5])
def test_mnist1d_derived_tasks_agree_with_digit(hide_rate):
  s = mnist1d(hide_rate=hide_rate)
  for split in (s.train, s.validation, s.test):
    d = split.labels["digit"]
    for name, want in (("digit_ge5", d >= 5), ("parity", d % 2 == 1)):
      both = split.mask["digit"] & split.mask[name]
      np.testing.assert_array_equal(split.labels[name][both], want[both].astype(np.int32))
      assert set(np.unique(split.labels[name])) == {0, 1}


def test_mnist1d_validation_is_disjoint_from_train():
  s = mnist1d(num_validation=700)
  assert (len(s.train), len(s.validation), len(s.test)) == (3300, 700, 1000)
  train_rows = {r.tobytes() for r in s.train.inputs}
  assert not any(r.tobytes() in train_rows for r in s.validation.inputs)
  assert not any(r.tobytes() in train_rows for r in s.test.inputs)
  with pytest.raises(ValueError, match="num_validation"):
    mnist1d(num_validation=4000)


def test_mnist1d_hide_rates_train_only():
  s = mnist1d(hide_rate=0.4, hide_rates={"digit": 0.9}, seed=3)
  hidden = {k: (~m).mean() for k, m in s.train.mask.items()}
  # n=3500: binomial std <= 0.009.
  assert abs(hidden["digit"] - 0.9) < 0.03, hidden
  assert abs(hidden["digit_ge5"] - 0.4) < 0.03 and abs(hidden["parity"] - 0.4) < 0.03, hidden
  assert not np.array_equal(s.train.mask["digit_ge5"], s.train.mask["parity"])
  assert all(m.all() for split in (s.validation, s.test) for m in split.mask.values())
  again = mnist1d(hide_rate=0.4, hide_rates={"digit": 0.9}, seed=3)
  np.testing.assert_array_equal(s.train.mask["parity"], again.train.mask["parity"])
  with pytest.raises(ValueError, match="unknown tasks"):
    mnist1d(hide_rates={"digits": 0.5})


def test_mnist1d_shuffle_spatial_is_one_fixed_permutation(m1d):
  s = mnist1d(shuffle_spatial=True)
  perms = []
  for plain, shuf in ((m1d.train, s.train), (m1d.validation, s.validation), (m1d.test, s.test)):
    np.testing.assert_array_equal(np.sort(plain.inputs, 1), np.sort(shuf.inputs, 1))
    # Column j of the shuffled data must equal one column of the plain data
    # in every row: that column is perm[j].
    eq = np.all(shuf.inputs[:, :, None] == plain.inputs[:, None, :], axis=0)
    assert (eq.sum(1) == 1).all()
    perms.append(eq.argmax(1))
    np.testing.assert_array_equal(shuf.labels["digit"], plain.labels["digit"])
  assert all(np.array_equal(perms[0], q) for q in perms[1:])
  assert sorted(perms[0]) == list(range(40)) and (perms[0] != np.arange(40)).sum() > 30
  np.testing.assert_array_equal(mnist1d(shuffle_spatial=True).test.inputs, s.test.inputs)


def test_mnist1d_dataset_args():
  with pytest.raises(ValueError, match="num_samples"):  # the message lists valid keys
    mnist1d(dataset_args={"num_sample": 100})
  state = np.random.get_state()
  s = mnist1d(num_validation=50, dataset_args={"num_samples": 300, "seed": 7})
  assert (len(s.train), len(s.validation), len(s.test)) == (190, 50, 60)
  # make_dataset reseeds the global numpy RNG; the builder restores it.
  np.testing.assert_array_equal(np.random.get_state()[1], state[1])


# ---------------------------------------------------------------- TFDS


def test_tfds_mock_mnist_values():
  # mock_data patches tfds.data_source with random records; no TensorFlow is
  # needed. Every mocked split holds the same num_examples records.
  with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
    s = tfds_dataset("mnist", tasks={"digit": "label", "digit_again": "label"})
    src = tfds.data_source("mnist", split="train")
    raw = [src[i] for i in range(len(src))]
    small = tfds_dataset("mnist", tasks={"digit": "label"}, max_examples=5, scale=1.0)
  images = np.stack([r["image"] for r in raw])
  labels = np.stack([r["label"] for r in raw])
  for split in (s.train, s.validation, s.test):
    assert split.inputs.shape == (12, 28, 28, 1) and split.inputs.dtype == np.float32
    np.testing.assert_allclose(split.inputs, images.astype(np.float32) / 255, rtol=1e-6)
    np.testing.assert_array_equal(split.labels["digit"], labels)
    np.testing.assert_array_equal(split.labels["digit_again"], labels)
    assert split.mask["digit"].all()
  assert len(small.train) == 5
  np.testing.assert_array_equal(small.train.inputs, images[:5].astype(np.float32))


def test_tfds_unknown_label_key_names_it():
  with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
    with pytest.raises(KeyError, match="'digit'.*'labels'.*available features.*'image'"):
      tfds_dataset("mnist", tasks={"digit": "labels"})


class MtlJaxTinyDigits(tfds.core.GeneratorBasedBuilder):
  """20 train records and no test split: value i, label i % 10, aux -1 for i % 3 == 0."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "x": tfds.features.Tensor(shape=(3,), dtype=np.uint8),
        "label": tfds.features.ClassLabel(num_classes=10),
        "aux": tfds.features.Scalar(dtype=np.int64)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i in range(20):
      yield i, {"x": np.full(3, i, np.uint8), "label": i % 10, "aux": -1 if i % 3 == 0 else i}


def test_tfds_real_array_record_files(tmp_path):
  # A tiny dataset really prepared (array_record) and read back: split slicing,
  # the -1 mask and a missing test split, which mock_data cannot show.
  MtlJaxTinyDigits(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  s = tfds_dataset("mtl_jax_tiny_digits", tasks={"digit": "label", "aux": "aux"},
                   input_key="x", data_dir=str(tmp_path), scale=1.0)
  assert s.test is None
  assert (len(s.train), len(s.validation)) == (18, 2)
  values = np.concatenate([s.train.inputs[:, 0], s.validation.inputs[:, 0]]).astype(int)
  assert sorted(values) == list(range(20))
  for split in (s.train, s.validation):
    i = split.inputs[:, 0].astype(int)
    np.testing.assert_array_equal(split.inputs, np.repeat(i[:, None], 3, 1))
    np.testing.assert_array_equal(split.labels["digit"], i % 10)
    np.testing.assert_array_equal(split.mask["aux"], i % 3 != 0)
    np.testing.assert_array_equal(split.labels["aux"][split.mask["aux"]], i[i % 3 != 0])
    assert split.mask["digit"].all()
  with pytest.raises(ValueError, match="Unknown split"):  # a named test split must exist
    tfds_dataset("mtl_jax_tiny_digits", tasks={"digit": "label"}, input_key="x",
                 data_dir=str(tmp_path), splits={"train": "train", "validation": "train",
                                                 "test": "test"})


# ---------------------------------------------------------------- registry


def test_unknown_dataset_lists_valid_names():
  with pytest.raises(KeyError, match="valid names.*'mmoe_synthetic'") as e:
    build_dataset({"name": "mnist2d"})
  assert all(n in str(e.value) for n in ("'mnist1d'", "'tfds'", "'mnist2d'"))


def test_build_dataset_passes_kwargs():
  s = build_dataset({"name": "mmoe_synthetic", "p": 0.9, "num_train": 100,
                     "num_validation": 20, "num_test": 30})
  assert (len(s.train), len(s.validation), len(s.test)) == (100, 20, 30)


def test_mnist1d_disk_cache_equals_fresh_generation(tmp_path, monkeypatch):
  from mtl_jax.data import mnist1d_tasks
  monkeypatch.setenv("MTL_JAX_CACHE", str(tmp_path))
  args = {"num_samples": 600}
  first = mnist1d_tasks.generate(args)       # miss: generates and writes
  assert len(list(tmp_path.glob("mnist1d_*.npz"))) == 1
  second = mnist1d_tasks.generate(args)      # hit: loads
  fresh = mnist1d_tasks._generate_in_memory(args)
  for a, b, c in zip(first, second, fresh):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(b, c)


def test_mnist1d_class_subset_and_per_class_subsample():
  from mtl_jax.data import build_dataset
  full = build_dataset({"name": "mnist1d"})
  d = build_dataset({"name": "mnist1d", "classes": [5, 7, 9], "train_per_class": 10, "seed": 3})
  assert len(d.train) == 30
  assert sorted(np.unique(d.train.labels["digit"])) == [0, 1, 2]
  np.testing.assert_array_equal(np.bincount(d.train.labels["digit"]), [10, 10, 10])
  assert np.all(d.test.labels["digit_ge5"] == 1)  # true digits are all >= 5
  # Relabelled digit matches the original digit of the same signal.
  keep = np.isin(full.test.labels["digit"], [5, 7, 9])
  np.testing.assert_array_equal(np.array([5, 7, 9])[d.test.labels["digit"]],
                                full.test.labels["digit"][keep])
  with pytest.raises(ValueError, match="has only"):
    build_dataset({"name": "mnist1d", "train_per_class": 10_000})
  with pytest.raises(ValueError, match="distinct digits"):
    build_dataset({"name": "mnist1d", "classes": [1, 1]})
