"""TFDS ``glue/<task>`` through ``tfds.data_source`` -> token ids, like the TSV reader.

The dataset must already be prepared (array_record) in ``data_dir``: nothing
is downloaded. Feature names and split names are TFDS's (MNLI's
``premise``/``hypothesis``, ``validation_matched``...); test labels are -1
(GLUE keeps them private) and read as unlabelled. Tokenization is cached like
the TSV splits, keyed by tokenizer, max length and the TFDS dataset, version,
split and record count (prepared TFDS versions are immutable).
"""

import os
from typing import Optional

import numpy as np

from mtl_jax.data import glue as glue_tsv
from mtl_jax.data.base import DATASETS, DataSplits

# task -> (first sentence feature, second or None)
FEATURES = {"cola": ("sentence", None), "sst2": ("sentence", None),
            "mrpc": ("sentence1", "sentence2"), "qqp": ("question1", "question2"),
            "stsb": ("sentence1", "sentence2"), "mnli": ("premise", "hypothesis"),
            "qnli": ("question", "sentence"), "rte": ("sentence1", "sentence2"),
            "wnli": ("sentence1", "sentence2")}
DEV = {"mnli": "validation_matched"}


def _text(v) -> str:
  return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def read_split(task: str, split: str, data_dir: Optional[str] = None) -> glue_tsv.GlueSplit:
  """One split of ``glue/<task>``; labels None when every label is -1 (test splits)."""
  import tensorflow_datasets as tfds
  import tensorflow_datasets.text  # noqa: F401  (registers glue)
  from mtl_jax.data.tfds_source import _records
  key = glue_tsv.task_key(task)
  first, second = FEATURES[key]
  source = tfds.data_source(f"glue/{key}", split=split, data_dir=data_dir)
  available = list(source.dataset_info.features.keys())
  missing = [f for f in (first, second, "label") if f and f not in available]
  if missing:
    raise KeyError(f"glue/{key} ({split}): features {missing} are not in the data; available: "
                   f"{available}")
  records = _records(source, list(range(len(source))))
  text = [_text(r[first]) for r in records]
  pair = [_text(r[second]) for r in records] if second else None
  dtype = np.float32 if key == "stsb" else np.int32
  labels = np.array([r["label"] for r in records], dtype)
  if len(labels) and np.all(labels == -1):
    labels = None
  elif labels is not None and np.any(labels == -1):
    raise ValueError(f"glue/{key} ({split}): some but not all labels are -1 (missing)")
  return glue_tsv.GlueSplit(text, pair, labels)


def _fingerprint(task: str, split: str, data_dir: Optional[str]) -> str:
  import tensorflow_datasets as tfds
  import tensorflow_datasets.text  # noqa: F401
  source = tfds.data_source(f"glue/{task}", split=split, data_dir=data_dir)
  return f"tfds:glue/{task}:{source.dataset_info.version}:{split}:{len(source)}:" \
         f"{os.path.abspath(data_dir) if data_dir else ''}"


def tokenized_split(task: str, split: str, tokenizer_dir: str, max_length: int = 128,
                    data_dir: Optional[str] = None, cache_dir: Optional[str] = None):
  key = glue_tsv.task_key(task)
  cache_dir = cache_dir or os.path.expanduser("~/.cache/mtl_jax/glue_tfds")
  ck = glue_tsv.cache_key(tokenizer_dir, max_length, _fingerprint(key, split, data_dir))
  return glue_tsv.cached_tokenize(os.path.join(cache_dir, f"{key}_{split}_{ck}.npz"),
                                  lambda: read_split(key, split, data_dir), tokenizer_dir,
                                  max_length)


@DATASETS.register("glue_tfds")
def glue_tfds(task: str, tokenizer: str, max_length: int = 128, data_dir: Optional[str] = None,
              task_name: Optional[str] = None, holdout: float = 0.0, dev: Optional[str] = None,
              cache_dir: Optional[str] = None, max_examples: Optional[int] = None,
              seed: int = 0) -> DataSplits:
  """Like the ``glue`` TSV builder, from a prepared TFDS ``glue/<task>``.

  ``dev`` defaults to "validation" ("validation_matched" for MNLI).
  """
  key = glue_tsv.task_key(task)
  kw = dict(tokenizer_dir=tokenizer, max_length=max_length, data_dir=data_dir,
            cache_dir=cache_dir)
  dev = dev or DEV.get(key, "validation")
  return glue_tsv.make_splits(tokenized_split(key, "train", **kw),
                              tokenized_split(key, dev, **kw), task_name or key, holdout, seed,
                              max_examples)
