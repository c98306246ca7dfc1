"""Any prepared TFDS dataset as in-memory multi-task splits.

Reads through ``tfds.data_source`` (array_record random access), which needs
no TensorFlow. The dataset must already be prepared in ``data_dir`` in the
array_record format: nothing is downloaded here. Records are read into numpy
arrays, so this is for datasets that fit in host memory (MNIST-sized).

Without TensorFlow, reading works (PNG images decode with PIL or OpenCV) but
*preparing* a dataset with Image features does not, since TFDS encodes them
with TensorFlow: prepare once where TensorFlow is installed. Tests use
``tfds.testing.mock_data`` (random records, no TensorFlow) and a tiny dataset
of Tensor features prepared into a temporary data_dir.
"""

import os
from typing import Any, Dict, Mapping, Optional

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

DEFAULT_SPLITS = {"train": "train[:90%]", "validation": "train[90%:]", "test": "test"}
MISSING_LABEL = -1
_CHUNK = 1024  # records per __getitems__ call: batched reads are much faster


class DatasetNotPreparedError(FileNotFoundError):
  """The TFDS dataset has no prepared array_record files in data_dir."""


def _source(dataset: str, split: str, data_dir: Optional[str]):
  import tensorflow_datasets as tfds  # ~0.5 s to import: only when used
  try:
    # download=False: tfds would otherwise try to download and prepare it here.
    return tfds.data_source(dataset, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # pylint: disable=broad-except
    builder = tfds.builder(dataset, data_dir=data_dir)
    if builder.is_prepared():  # e.g. prepared as tfrecord: tfds says so itself
      raise
    root = os.path.dirname(os.path.dirname(builder.data_dir))
    raise DatasetNotPreparedError(
        f"TFDS dataset {dataset!r} is not prepared in data_dir {root} (no array_record files "
        f"in {builder.data_dir}). Nothing is downloaded at training time: prepare it once, "
        f"e.g. `tfds build {dataset} --data_dir={root} --file_format=array_record` (needs "
        f"TensorFlow for image features), and pass data_dir.") from e


def _records(source, keys):
  try:
    return source.__getitems__(keys)
  except TypeError:
    # tfds.testing.mock_data (tfds 4.9.10) installs __getitems__ unbound, so
    # it fails with a TypeError; one-by-one reads give the same records.
    return [source[k] for k in keys]


def _read(source, keys, max_examples: Optional[int]) -> Dict[str, np.ndarray]:
  """The features ``keys`` of the first ``max_examples`` records, stacked."""
  n = len(source) if max_examples is None else min(len(source), max_examples)
  if n == 0:
    raise ValueError("the split has no examples")
  cols = {k: [] for k in keys}
  for start in range(0, n, _CHUNK):
    for ex in _records(source, list(range(start, min(n, start + _CHUNK)))):
      for k in keys:
        cols[k].append(np.asarray(ex[k]))
  return {k: np.stack(v) for k, v in cols.items()}


def _split(dataset: str, split: str, tasks: Mapping[str, str], input_key: str,
           data_dir: Optional[str], scale: float, max_examples: Optional[int]) -> ArrayDataset:
  source = _source(dataset, split, data_dir)
  available = list(source.dataset_info.features.keys())
  for role, key in [("input_key", input_key)] + [(f"task {t!r}", k) for t, k in tasks.items()]:
    if key not in available:
      raise KeyError(f"{dataset} ({split}): {role} names feature {key!r}, which is not in "
                     f"the data; available features: {available}")
  cols = _read(source, [input_key] + sorted(set(tasks.values())), max_examples)
  labels = {t: cols[k] for t, k in tasks.items()}
  # -1 is TFDS's "no label" value (e.g. unlabelled ClassLabel entries).
  mask = {t: ~np.all((y == MISSING_LABEL).reshape(len(y), -1), axis=1)
          for t, y in labels.items()}
  inputs = cols[input_key].astype(np.float32) * np.float32(scale)
  return ArrayDataset(inputs, labels, mask)


@DATASETS.register("tfds")
def tfds_dataset(dataset: str, tasks: Mapping[str, str], input_key: str = "image",
                 splits: Optional[Mapping[str, str]] = None, data_dir: Optional[str] = None,
                 scale: float = 1 / 255, max_examples: Optional[int] = None) -> DataSplits:
  """Splits of a prepared TFDS dataset; ``tasks`` maps task name -> label feature.

  ``splits`` maps "train", "validation" and optionally "test" to TFDS split
  strings (default DEFAULT_SPLITS). With the default, a dataset that has no
  "test" split gets ``test=None``; a test split the caller names must exist.
  Inputs become float32 times ``scale``; labels keep their dtype and a label
  of -1 (all -1 for vector labels) is masked as missing. ``max_examples``
  keeps the first records of each split: TFDS shuffles records when it
  prepares a dataset, so they are a fair sample.
  """
  if not tasks:
    raise ValueError("tasks is empty: map at least one task name to a label feature")
  names = dict(DEFAULT_SPLITS if splits is None else splits)
  unknown = sorted(set(names) - set(DEFAULT_SPLITS))
  missing = sorted({"train", "validation"} - set(names))
  if unknown or missing:
    raise ValueError(f"splits must map 'train', 'validation' and optionally 'test'; got "
                     f"{sorted(names)}")
  kw: Dict[str, Any] = dict(tasks=dict(tasks), input_key=input_key, data_dir=data_dir,
                            scale=scale, max_examples=max_examples)
  train = _split(dataset, names["train"], **kw)
  validation = _split(dataset, names["validation"], **kw)
  test = None
  if "test" in names:
    try:
      test = _split(dataset, names["test"], **kw)
    except ValueError as e:  # TFDS: "Unknown split 'test'. Should be one of [...]"
      if splits is not None or not str(e).startswith("Unknown split"):
        raise
  return DataSplits(train, validation, test)
