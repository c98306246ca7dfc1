"""``nyuv2`` and ``cityscapes``: user-supplied folders in LibMTL's / MTAN's preprocessed layout.

The preprocessed NYUv2 of MTAN (Liu et al. 2019), which LibMTL, CAGrad,
Nash-MTL and FAMO read, is one ``.npy`` file per image and per field::

    <data_dir>/train/image/0.npy ... <n-1>.npy   float [H, W, 3]
                    /label/<i>.npy               float or int [H, W], classes 0..K-1, -1 ignored
                    /depth/<i>.npy               float [H, W, 1] (or [H, W]), 0 = no depth
                    /normal/<i>.npy              float [H, W, 3], (0, 0, 0) = no normal
    <data_dir>/val/...                           the same fields

(NYUv2: 795 train and 654 val images at 288x384, 13 classes; Cityscapes:
2975 / 500 at 128x256 with ``image``, ``label`` (7 classes) and ``depth``.)
Files are indexed ``0..n-1`` as the reference loaders read them
(``'{:d}.npy'.format(index)``). Labels become the batch format of the dense
kinds: segmentation int32 with ``ignore_label`` mapped to -1, depth
squeezed to [H, W].

Splits: ``test`` is the ``val`` folder (what the papers report). With
``holdout=0`` (the papers' protocol, which has no separate validation set)
``validation`` is the ``val`` folder too; ``holdout=k`` moves k train images
(chosen by ``seed``) into ``validation`` for honest model selection.
"""

import hashlib
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits
from mtl_jax.kinds.segmentation import IGNORE, remap_ignore

_FIELD_TASK = {"label": "segmentation", "depth": "depth", "normal": "normal"}


class DatasetLayoutError(ValueError):
  """A user folder that is not in the expected layout (missing, mismatched, out of range)."""


def _count(folder: str) -> List[int]:
  if not os.path.isdir(folder):
    raise DatasetLayoutError(f"missing folder {folder}; expected <data_dir>/{{train,val}}/"
                             f"{{image,label,depth,normal}}/<i>.npy (LibMTL's / MTAN's layout)")
  names = [f for f in os.listdir(folder) if f.endswith(".npy")]
  idx = sorted(int(f[:-4]) for f in names if f[:-4].isdigit())
  if len(idx) != len(names):
    odd = sorted(f for f in names if not f[:-4].isdigit())[:3]
    raise DatasetLayoutError(f"{folder}: files must be named <i>.npy, found {odd}")
  if not idx:
    raise DatasetLayoutError(f"{folder} holds no .npy file")
  if idx != list(range(len(idx))):
    gap = min(set(range(len(idx))) - set(idx))
    raise DatasetLayoutError(f"{folder}: {len(idx)} files but not 0..{len(idx) - 1}.npy; "
                             f"{gap}.npy is missing")
  return idx


def listing_fingerprint(root: str, fields: Sequence[str]) -> str:
  """sha256 (16 hex) of the relative paths and sizes of the layout's files: cheap, logged."""
  h = hashlib.sha256()
  for split in ("train", "val"):
    for field in fields:
      folder = os.path.join(root, split, field)
      for f in sorted(os.listdir(folder)):
        h.update(f"{split}/{field}/{f}:{os.path.getsize(os.path.join(folder, f))};".encode())
  return h.hexdigest()[:16]


def _expected(field: str, hw) -> tuple:
  return {"image": hw + (3,), "label": hw, "depth": hw + (1,), "normal": hw + (3,)}[field]


def read_split(root: str, split: str, fields: Sequence[str], label_dir: str, num_classes: int,
               ignore_label: int) -> ArrayDataset:
  """One split folder as an ArrayDataset; every error names the file and what is wrong."""
  base = os.path.join(root, split)
  dirs = {f: os.path.join(base, label_dir if f == "label" else f) for f in fields}
  counts = {f: len(_count(d)) for f, d in dirs.items()}
  if len(set(counts.values())) > 1:
    raise DatasetLayoutError(f"{base}: the fields hold different numbers of files: {counts}")
  n = counts["image"]
  first = np.load(os.path.join(dirs["image"], "0.npy"))
  hw = tuple(first.shape[:2])
  out = {f: None for f in fields}
  for i in range(n):
    for f in fields:
      path = os.path.join(dirs[f], f"{i}.npy")
      a = np.load(path)
      want = _expected(f, hw)
      if f == "depth" and a.shape == hw:
        a = a[..., None]
      if a.shape != want:
        raise DatasetLayoutError(f"{path}: shape {a.shape}, expected {want} ({f} of an image "
                                 f"of {hw[0]}x{hw[1]}, as {dirs['image']}/0.npy)")
      if f == "label":
        a = _labels(path, a, num_classes, ignore_label)
      elif not np.all(np.isfinite(a)):
        raise DatasetLayoutError(f"{path}: {int((~np.isfinite(a)).sum())} non-finite values")
      elif f == "depth" and np.any(a < 0):
        raise DatasetLayoutError(f"{path}: {int((a < 0).sum())} negative depths "
                                 "(0 marks a missing depth)")
      if out[f] is None:
        out[f] = np.empty((n,) + a.shape, np.int32 if f == "label" else np.float32)
      out[f][i] = a
  labels = {_FIELD_TASK[f]: (out[f][..., 0] if f == "depth" else out[f])
            for f in fields if f != "image"}
  return ArrayDataset(out["image"], labels, {t: np.ones(n, bool) for t in labels})


def _labels(path: str, a: np.ndarray, num_classes: int, ignore_label: int) -> np.ndarray:
  try:
    lab = remap_ignore(a, ignore_label)
  except ValueError:
    raise DatasetLayoutError(f"{path}: segmentation labels must be whole numbers") from None
  bad = (lab != IGNORE) & ((lab < 0) | (lab >= num_classes))
  if bad.any():
    r, c = (int(v) for v in np.argwhere(bad)[0])
    raise DatasetLayoutError(
        f"{path}: {int(bad.sum())} labels outside the classes 0..{num_classes - 1} and the "
        f"ignore label {ignore_label}; first at pixel ({r}, {c}): {a[r, c]!r} (set "
        f"num_classes, or ignore_label if the files mark unlabelled pixels otherwise)")
  return lab


def read_folder(data_dir: Optional[str], fields: Sequence[str], name: str, num_classes: int,
                ignore_label: int, holdout: int, seed: int, label_dir: str = "label"
                ) -> DataSplits:
  if not data_dir:
    raise DatasetLayoutError(f"{name}: data_dir is required (the folder holding train/ and "
                             "val/ in LibMTL's / MTAN's .npy layout; docs/datasets.md)")
  root = os.path.expanduser(data_dir)
  if not os.path.isdir(root):
    raise DatasetLayoutError(f"{name}: data_dir {root} does not exist")
  if isinstance(holdout, bool) or not isinstance(holdout, (int, np.integer)) or holdout < 0:
    raise DatasetLayoutError(f"{name}: holdout={holdout!r} must be an integer >= 0")
  train, val = (read_split(root, s, fields, label_dir, num_classes, ignore_label)
                for s in ("train", "val"))
  if train.inputs.shape[1:] != val.inputs.shape[1:]:
    raise DatasetLayoutError(f"{name}: train images are {train.inputs.shape[1:]} but val "
                             f"images {val.inputs.shape[1:]}")
  logging.info("%s %s: %d train, %d val images of %s, listing sha256 %s", name, root,
               len(train), len(val), train.inputs.shape[1:],
               listing_fingerprint(root, [label_dir if f == "label" else f for f in fields]))
  if not holdout:
    return DataSplits(train, val, val)
  if holdout >= len(train):
    raise DatasetLayoutError(f"{name}: holdout={holdout} leaves no training image of "
                             f"{len(train)}")
  order = np.random.default_rng([seed, 7]).permutation(len(train))
  return DataSplits(train.subset(np.sort(order[holdout:])), train.subset(np.sort(order[:holdout])),
                    val)


@DATASETS.register("nyuv2")
def nyuv2(data_dir: Optional[str] = None, num_classes: int = 13, ignore_label: int = IGNORE,
          holdout: int = 0, seed: int = 0) -> DataSplits:
  """Tasks ``segmentation`` (13 classes), ``depth`` and ``normal`` from MTAN's NYUv2 folder."""
  return read_folder(data_dir, ("image", "label", "depth", "normal"), "nyuv2", num_classes,
                     ignore_label, holdout, seed)


@DATASETS.register("cityscapes")
def cityscapes(data_dir: Optional[str] = None, num_classes: int = 7, ignore_label: int = IGNORE,
               holdout: int = 0, seed: int = 0, label_dir: str = "label") -> DataSplits:
  """Tasks ``segmentation`` (7 classes; ``num_classes=19``, ``label_dir="label_19"`` for
  the 19-class files) and ``depth`` from a Cityscapes folder in the same layout."""
  return read_folder(data_dir, ("image", "label", "depth"), "cityscapes", num_classes,
                     ignore_label, holdout, seed, label_dir)


def write_folder(root: str, splits: Dict[str, Dict[str, np.ndarray]]) -> None:
  """Writes {split: {field: [N, ...]}} as ``<root>/<split>/<field>/<i>.npy`` (tests, exports)."""
  for split, fields in splits.items():
    for field, arrays in fields.items():
      folder = os.path.join(root, split, field)
      os.makedirs(folder, exist_ok=True)
      for i, a in enumerate(arrays):
        np.save(os.path.join(folder, f"{i}.npy"), a)
