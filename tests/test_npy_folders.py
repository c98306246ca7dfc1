"""``nyuv2`` / ``cityscapes`` readers on generated files in exactly LibMTL's / MTAN's layout.

The files are written as the reference preprocessing leaves them: float32
arrays, labels as floats with -1 (or 255) for unlabelled pixels, depth
[H, W, 1]; the reader must give the dense kinds' batch format back bit for
bit, and fail naming the file for every layout error.
"""

import os
import shutil

import numpy as np
import pytest

from mtl_jax import tasks
from mtl_jax.data import build_dataset
from mtl_jax.data.npy_folders import DatasetLayoutError, write_folder

H, W = 6, 8
NYU_SPECS = tasks.specs_from_config([dict(name="segmentation", kind="segmentation", num_outputs=13),
                                     dict(name="depth", kind="depth"),
                                     dict(name="normal", kind="normals", num_outputs=3)])


def _arrays(n, seed, classes=13, ignore=-1.0, normals=True):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, classes, (n, H, W)).astype(np.float32)
  label[:, 0, :2] = ignore
  depth = rng.uniform(0.5, 9.0, (n, H, W, 1)).astype(np.float32)
  depth[:, -1, -1] = 0.0
  out = {"image": rng.random((n, H, W, 3)).astype(np.float32), "label": label, "depth": depth}
  if normals:
    nrm = rng.normal(size=(n, H, W, 3))
    nrm /= np.linalg.norm(nrm, axis=-1, keepdims=True)
    nrm[:, 1, 1] = 0.0
    out["normal"] = nrm.astype(np.float32)
  return out


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("nyuv2"))
  files = {"train": _arrays(5, 0), "val": _arrays(3, 1)}
  write_folder(root, files)
  return root, files


def _copy(root, tmp_path):
  dst = str(tmp_path / "copy")
  shutil.copytree(root, dst)
  return dst


def test_reads_the_layout_back_exactly(nyu):
  root, files = nyu
  s = build_dataset(dict(name="nyuv2", data_dir=root))
  assert len(s.train) == 5 and len(s.validation) == 3 and s.test is s.validation
  np.testing.assert_array_equal(s.train.inputs, files["train"]["image"])
  np.testing.assert_array_equal(s.test.labels["segmentation"], files["val"]["label"].astype(int))
  assert s.train.labels["segmentation"].dtype == np.int32
  np.testing.assert_array_equal(s.train.labels["depth"], files["train"]["depth"][..., 0])
  np.testing.assert_array_equal(s.train.labels["normal"], files["train"]["normal"])
  for split in (s.train, s.validation):
    tasks.validate_batch(NYU_SPECS, split.labels, split.mask, inputs=split.inputs)


def test_holdout_moves_seeded_train_images_to_validation(nyu):
  root, files = nyu
  a = build_dataset(dict(name="nyuv2", data_dir=root, holdout=2, seed=4))
  b = build_dataset(dict(name="nyuv2", data_dir=root, holdout=2, seed=4))
  assert len(a.train) == 3 and len(a.validation) == 2 and len(a.test) == 3
  np.testing.assert_array_equal(a.validation.inputs, b.validation.inputs)
  both = np.concatenate([a.train.inputs, a.validation.inputs])
  assert sorted(map(bytes, both)) == sorted(map(bytes, files["train"]["image"]))
  with pytest.raises(DatasetLayoutError, match="holdout=5 leaves no training image"):
    build_dataset(dict(name="nyuv2", data_dir=root, holdout=5))


def test_cityscapes_with_255_as_the_ignore_label(tmp_path):
  root = str(tmp_path / "cs")
  files = {s: _arrays(n, k, classes=7, ignore=255.0, normals=False)
           for k, (s, n) in enumerate((("train", 4), ("val", 2)))}
  write_folder(root, files)
  with pytest.raises(DatasetLayoutError, match=r"train/label/0.npy: .*outside the classes 0..6"):
    build_dataset(dict(name="cityscapes", data_dir=root))
  s = build_dataset(dict(name="cityscapes", data_dir=root, ignore_label=255))
  assert set(s.train.labels) == {"segmentation", "depth"}
  lab = s.train.labels["segmentation"]
  assert np.all(lab[:, 0, :2] == -1) and lab.max() <= 6


def test_missing_folders_and_files_are_named(nyu, tmp_path):
  root, _ = nyu
  with pytest.raises(DatasetLayoutError, match="data_dir is required"):
    build_dataset(dict(name="nyuv2"))
  with pytest.raises(DatasetLayoutError, match="does not exist"):
    build_dataset(dict(name="nyuv2", data_dir=str(tmp_path / "nope")))
  d = _copy(root, tmp_path)
  shutil.rmtree(os.path.join(d, "val", "normal"))
  with pytest.raises(DatasetLayoutError, match=r"missing folder .*val/normal"):
    build_dataset(dict(name="nyuv2", data_dir=d))
  shutil.rmtree(d)
  d = _copy(root, tmp_path)
  os.remove(os.path.join(d, "train", "depth", "4.npy"))
  with pytest.raises(DatasetLayoutError, match=r"different numbers of files: .*'depth': 4"):
    build_dataset(dict(name="nyuv2", data_dir=d))
  os.rename(os.path.join(d, "train", "depth", "3.npy"), os.path.join(d, "train", "depth", "4.npy"))
  for f in ("image", "label", "normal"):
    os.remove(os.path.join(d, "train", f, "4.npy"))  # 0..3 there, 0, 1, 2, 4 in depth
  with pytest.raises(DatasetLayoutError, match=r"train/depth: 4 files but not 0..3.npy; 3.npy"):
    build_dataset(dict(name="nyuv2", data_dir=d))


@pytest.mark.parametrize("field,value,match", [
    ("label", np.full((H, W), 13.0, np.float32), r"label/2.npy: 48 labels outside .*0..12"),
    ("label", np.full((H, W), 0.5, np.float32), r"label/2.npy: .*whole numbers"),
    ("depth", np.zeros((H, W + 1, 1), np.float32), r"depth/2.npy: shape \(6, 9, 1\), expected "
                                                    r"\(6, 8, 1\)"),
    ("depth", -np.ones((H, W, 1), np.float32), r"depth/2.npy: 48 negative depths"),
    ("normal", np.full((H, W, 3), np.nan, np.float32), r"normal/2.npy: 144 non-finite"),
    ("image", np.zeros((H, W), np.float32), r"image/2.npy: shape \(6, 8\), expected \(6, 8, 3\)"),
])
def test_bad_files_are_named(nyu, tmp_path, field, value, match):
  d = _copy(nyu[0], tmp_path)
  np.save(os.path.join(d, "train", field, "2.npy"), value)
  with pytest.raises(DatasetLayoutError, match=match):
    build_dataset(dict(name="nyuv2", data_dir=d))


def test_train_and_val_of_different_sizes(tmp_path):
  root = str(tmp_path / "mixed")
  write_folder(root, {"train": _arrays(2, 0)})
  small = {k: v[:, :, :W // 2] for k, v in _arrays(2, 1).items()}
  write_folder(root, {"val": small})
  with pytest.raises(DatasetLayoutError, match=r"train images are \(6, 8, 3\) but val images "
                                               r"\(6, 4, 3\)"):
    build_dataset(dict(name="nyuv2", data_dir=root))


def test_study_provenance_fingerprints_the_folder(nyu, tmp_path):
  """sweep.provenance hashes a listing (names, sizes) of ``data.data_dir``: another folder
  at the same path is another setup."""
  import ml_collections
  from mtl_jax import sweep
  d = _copy(nyu[0], tmp_path)
  cfg = ml_collections.ConfigDict({"data": {"name": "nyuv2", "data_dir": d}, "seed": 0})
  before, flat = sweep.provenance(cfg, 0, commit="x")
  assert "data.data_dir#listing" in flat
  np.save(os.path.join(d, "val", "image", "0.npy"), np.zeros((H, W + 1, 3), np.float32))
  after, _ = sweep.provenance(cfg, 0, commit="x")
  assert after["setup_hash"] != before["setup_hash"]
