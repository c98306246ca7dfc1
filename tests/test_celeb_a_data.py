"""The celeb_a builder on tfds.testing.mock_data (random records with
celeb_a's features; nothing is downloaded): decoding, resizing, cropping,
labels, splits, and errors that name the culprit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from mtl_jax.data import build_dataset
from mtl_jax.data.celeb_a import ATTRIBUTES


def _mock(n=6):
  return tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE)


def _raw(split, n):
  src = tfds.data_source("celeb_a", split=split)
  return [src[i] for i in range(n)]


def test_attribute_list_is_the_datasets():
  with _mock(1):
    info = tfds.data_source("celeb_a", split="train").dataset_info
  assert tuple(info.features["attributes"].keys()) == ATTRIBUTES and len(ATTRIBUTES) == 40
  assert info.features["image"].shape == (218, 178, 3)


def test_values_against_independent_resize():
  with _mock(6):
    s = build_dataset(dict(name="celeb_a", image_size=64))
    full = build_dataset(dict(name="celeb_a", image_size=(218, 178), attributes=("Male", "Young"),
                              max_examples=3))
    crop = build_dataset(dict(name="celeb_a", image_size=178, crop="center", max_examples=2))
    raw = {k: _raw(k, 6) for k in ("train", "validation", "test")}
  for name in ("train", "validation", "test"):
    split = getattr(s, name)
    images = np.stack([r["image"] for r in raw[name]]).astype(np.float32) / 255
    assert split.inputs.shape == (6, 64, 64, 3) and split.inputs.dtype == np.float32
    # PIL's bilinear downscale is a triangle filter widened by the scale, as jax's antialias.
    ref = np.asarray(jax.image.resize(jnp.asarray(images), (6, 64, 64, 3), "linear", antialias=True))
    assert np.abs(split.inputs - ref).max() <= 1.01 / 255  # PIL rounds to uint8
    assert sorted(split.labels) == sorted(ATTRIBUTES)
    for a in ATTRIBUTES:
      want = np.array([bool(r["attributes"][a]) for r in raw[name]], np.int32)
      np.testing.assert_array_equal(split.labels[a], want, err_msg=a)
      assert split.labels[a].dtype == np.int32 and split.mask[a].all()
  images = np.stack([r["image"] for r in raw["train"][:3]]).astype(np.float32) / 255
  np.testing.assert_array_equal(full.train.inputs, images)  # no resize: exact pixels
  assert sorted(full.train.labels) == ["Male", "Young"]
  np.testing.assert_array_equal(crop.train.inputs, images[:2, 20:198])  # (218 - 178) / 2 = 20


def test_bad_options_name_the_culprit():
  with _mock(2):
    with pytest.raises(KeyError, match=r"\['Smilling'\].*available.*'Smiling'"):
      build_dataset(dict(name="celeb_a", attributes=("Smilling",)))
    with pytest.raises(ValueError, match="crop='random'"):
      build_dataset(dict(name="celeb_a", crop="random"))
    with pytest.raises(ValueError, match="image_size=0"):
      build_dataset(dict(name="celeb_a", image_size=0))
    with pytest.raises(ValueError, match=r"'Male'\] are listed more than once"):
      build_dataset(dict(name="celeb_a", attributes=("Male", "Male")))
    with pytest.raises(ValueError, match="splits must map"):
      build_dataset(dict(name="celeb_a", splits={"train": "train"}))


def test_unprepared_dataset_says_how_to_prepare(tmp_path):
  from mtl_jax.data.tfds_source import DatasetNotPreparedError
  with pytest.raises(DatasetNotPreparedError, match="not prepared.*tfds build celeb_a"):
    build_dataset(dict(name="celeb_a", data_dir=str(tmp_path)))
