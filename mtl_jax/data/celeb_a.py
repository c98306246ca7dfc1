"""CelebA's 40 binary attributes as 40 tasks (Sener & Koltun 2018), from TFDS ``celeb_a``.

Reads the prepared TFDS dataset (array_record, through ``tfds.data_source``;
nothing is downloaded: see tfds_source.py) split by split on the official
partition (train 162,770 / validation 19,867 / test 19,962 images), decodes
each 218x178 JPEG, optionally center-crops it to a square, resizes it with
PIL's antialiased bilinear filter to ``image_size`` and scales pixels to
[0, 1]. Sener & Koltun resize the whole image to 64x64 (``crop="none"``, the
default), squashing the aspect ratio. Each attribute becomes a task of the
same name with 0/1 int32 labels; every example is labelled.

Splits are held in host memory as float32: 12 KiB x 4 per 64x64 image, about
8 GB for the train split and 1 GB each for validation and test. Use
``max_examples`` for smaller runs.
"""

from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits
from mtl_jax.data.tfds_source import _CHUNK, _records, _source

NAME = "celeb_a"
SPLITS = {"train": "train", "validation": "validation", "test": "test"}
CROPS = ("none", "center")
# The 40 attributes, in the order of the dataset's list_attr_celeba.txt (and TFDS).
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair",
    "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair",
    "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes",
    "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young")


def _size(image_size) -> Tuple[int, int]:
  size = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
  if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
    raise ValueError(f"celeb_a: image_size={image_size!r}; valid: a positive int or (H, W)")
  return int(size[0]), int(size[1])


def preprocess(image: np.ndarray, size: Tuple[int, int], crop: str) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [size..., 3] in [0, 1]: optional center square crop, resize."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if crop == "center":
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    image = image[top:top + s, left:left + s]
  if image.shape[:2] != size:
    image = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.BILINEAR))
  return image.astype(np.float32) / np.float32(255)


def _split(split: str, attributes: Sequence[str], size, crop, data_dir,
           max_examples: Optional[int]) -> ArrayDataset:
  source = _source(NAME, split, data_dir)
  features = source.dataset_info.features
  available = list(features["attributes"].keys()) if "attributes" in features else []
  missing = [a for a in attributes if a not in available]
  if missing:
    raise KeyError(f"celeb_a ({split}): attributes {missing} are not in the data; available: "
                   f"{available}")
  n = len(source) if max_examples is None else min(len(source), int(max_examples))
  if n == 0:
    raise ValueError(f"celeb_a: split {split!r} has no examples")
  images = np.empty((n,) + size + (3,), np.float32)
  labels = {a: np.empty(n, np.int32) for a in attributes}
  for start in range(0, n, _CHUNK):
    for i, ex in enumerate(_records(source, list(range(start, min(n, start + _CHUNK)))), start):
      image = np.asarray(ex["image"])
      if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
        raise ValueError(f"celeb_a ({split}): record {i} has image {image.shape} {image.dtype}; "
                         f"expected uint8 [H, W, 3]")
      images[i] = preprocess(image, size, crop)
      for a in attributes:
        labels[a][i] = bool(ex["attributes"][a])
  return ArrayDataset(images, labels, {a: np.ones(n, bool) for a in attributes})


@DATASETS.register("celeb_a")
def celeb_a(image_size: Union[int, Tuple[int, int]] = 64, crop: str = "none",
            attributes: Optional[Sequence[str]] = None, data_dir: Optional[str] = None,
            max_examples: Optional[int] = None,
            splits: Optional[Mapping[str, str]] = None) -> DataSplits:
  """The official splits; ``attributes`` (default all 40) picks the tasks.

  ``splits`` maps "train", "validation", "test" to TFDS split strings
  (default the official partition). ``max_examples`` keeps the first records
  of each split (TFDS shuffles records when it prepares a dataset).
  """
  if crop not in CROPS:
    raise ValueError(f"celeb_a: crop={crop!r}; valid: {list(CROPS)}")
  attributes = tuple(ATTRIBUTES if attributes is None else attributes)
  if not attributes:
    raise ValueError("celeb_a: attributes is empty; name at least one (or None for all 40)")
  dupes = sorted({a for a in attributes if attributes.count(a) > 1})
  if dupes:
    raise ValueError(f"celeb_a: attributes {dupes} are listed more than once")
  names = dict(SPLITS if splits is None else splits)
  if sorted(names) != sorted(SPLITS):
    raise ValueError(f"celeb_a: splits must map exactly {sorted(SPLITS)}; got {sorted(names)}")
  kw = dict(attributes=attributes, size=_size(image_size), crop=crop, data_dir=data_dir,
            max_examples=max_examples)
  return DataSplits(*(_split(names[k], **kw) for k in ("train", "validation", "test")))
