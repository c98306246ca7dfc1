"""GLUE-format TSV directories (as written by the GLUE download script) -> token ids.

Each task keeps its real file layout: which files, whether there is a header,
which columns hold the sentences and the label, and the test files without
labels. Columns are found by header name, so a file with a missing column
or a row with the wrong number of fields is an error naming file and line.
Tokenization runs once per split and is cached as .npz, keyed by the
tokenizer (hash of tokenizer.json), the max length and the file's hash.

``config.data = dict(name="glue", task="mrpc", data_dir=..., tokenizer=<HF dir>)``
gives DataSplits whose inputs are dicts {input_ids, attention_mask,
token_type_ids} of int32 [N, max_length]. Sentence-pair tasks are ordinary
multiclass (or, STS-B, regression) tasks on a pair input.
"""

import csv
import dataclasses
import hashlib
import os
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

CACHE_VERSION = 1
csv.field_size_limit(sys.maxsize)  # MNLI's parse columns are long


@dataclasses.dataclass(frozen=True)
class GlueTask:
  """One task's file layout. ``label`` None: regression on a float column."""
  text: str
  pair: Optional[str]
  label_column: str
  labels: Optional[Tuple[str, ...]]           # class names in label-id order; None = regression
  files: Dict[str, str]                        # split -> file name
  header: bool = True
  columns: Optional[Tuple[str, ...]] = None    # for files without a header (CoLA train/dev)

  @property
  def kind(self) -> str:
    return "regression" if self.labels is None else "multiclass"

  @property
  def num_outputs(self) -> int:
    return 1 if self.labels is None else len(self.labels)


_STD = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
# Label orders follow the TFDS / Hugging Face `glue` datasets.
TASKS: Dict[str, GlueTask] = {
    "cola": GlueTask("sentence", None, "label", ("0", "1"), _STD, header=False,
                     columns=("source", "label", "original_label", "sentence")),
    "sst2": GlueTask("sentence", None, "label", ("0", "1"), _STD),
    "mrpc": GlueTask("#1 String", "#2 String", "Quality", ("0", "1"), _STD),
    "qqp": GlueTask("question1", "question2", "is_duplicate", ("0", "1"), _STD),
    "stsb": GlueTask("sentence1", "sentence2", "score", None, _STD),
    "mnli": GlueTask("sentence1", "sentence2", "gold_label",
                     ("entailment", "neutral", "contradiction"),
                     {"train": "train.tsv", "dev": "dev_matched.tsv",
                      "dev_matched": "dev_matched.tsv", "dev_mismatched": "dev_mismatched.tsv",
                      "test": "test_matched.tsv", "test_matched": "test_matched.tsv",
                      "test_mismatched": "test_mismatched.tsv"}),
    "qnli": GlueTask("question", "sentence", "label", ("entailment", "not_entailment"), _STD),
    "rte": GlueTask("sentence1", "sentence2", "label", ("entailment", "not_entailment"), _STD),
    "wnli": GlueTask("sentence1", "sentence2", "label", ("0", "1"), _STD),
}
# The GLUE download script's directory names.
DIR_NAMES = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
             "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI"}


def task_key(name: str) -> str:
  """"STS-B", "sts_b", "stsb" -> "stsb"; an unknown task lists the known ones."""
  key = name.lower().replace("-", "").replace("_", "")
  if key not in TASKS:
    raise KeyError(f"unknown GLUE task {name!r}; known tasks: {sorted(TASKS)}")
  return key


def get_task(name: str) -> GlueTask:
  return TASKS[task_key(name)]


@dataclasses.dataclass
class GlueSplit:
  """Raw text of one split; ``labels`` is None for a test file without labels."""
  text: List[str]
  pair: Optional[List[str]]
  labels: Optional[np.ndarray]


def read_tsv(path: str, columns: Optional[Sequence[str]] = None
             ) -> Tuple[List[str], List[List[str]], List[int]]:
  """(header, rows, line of each row) of an unquoted tab-separated file, as GLUE writes them.

  ``columns`` names the fields of a headerless file. Every row must have as
  many fields as the header: a ragged row is an error naming file and line.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GLUE file {path} does not exist")
  with open(path, encoding="utf-8", newline="") as f:
    rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
  if columns is None:
    if not rows:
      raise ValueError(f"{path}: empty file (expected a header line)")
    header, rows, first = rows[0], rows[1:], 2
  else:
    header, first = list(columns), 1
  out, lines = [], []
  for i, row in enumerate(rows):
    if not row or row == [""]:
      continue  # blank line (e.g. a trailing newline pair)
    if len(row) != len(header):
      raise ValueError(f"{path}:{first + i}: {len(row)} fields, but the header has "
                       f"{len(header)} ({header})")
    out.append(row)
    lines.append(first + i)
  return header, out, lines


def read_split(task: str, data_dir: str, split: str) -> GlueSplit:
  """One split of a GLUE task directory (the task's own folder, e.g. .../MRPC)."""
  t = get_task(task)
  if split not in t.files:
    raise KeyError(f"GLUE {task}: unknown split {split!r}; valid: {sorted(t.files)}")
  path = os.path.join(data_dir, t.files[split])
  is_test = split.startswith("test")
  # Test files always have a header (CoLA's too) and no label column.
  columns = None if (t.header or is_test) else t.columns
  header, rows, lines = read_tsv(path, columns)
  needed = [t.text] + ([t.pair] if t.pair else []) + ([] if is_test else [t.label_column])
  missing = [c for c in needed if c not in header]
  if missing:
    raise ValueError(f"{path}: missing columns {missing}; the file has {header} (GLUE {task} "
                     f"needs {needed})")
  col = {c: header.index(c) for c in needed}
  text = [r[col[t.text]] for r in rows]
  pair = [r[col[t.pair]] for r in rows] if t.pair else None
  labels = None
  if not is_test:
    raw = [r[col[t.label_column]] for r in rows]
    if t.labels is None:
      labels = np.zeros(len(raw), np.float32)
      for i, v in enumerate(raw):
        try:
          labels[i] = float(v)
        except ValueError:
          raise ValueError(f"{path}:{lines[i]}: {t.label_column} {v!r} is not a "
                           "number") from None
    else:
      index = {name: i for i, name in enumerate(t.labels)}
      labels = np.zeros(len(raw), np.int32)
      for i, v in enumerate(raw):
        if v not in index:
          raise ValueError(f"{path}:{lines[i]}: label {v!r} is not one of "
                           f"{list(t.labels)}")
        labels[i] = index[v]
  return GlueSplit(text, pair, labels)


# --- tokenization cache ---------------------------------------------------------

def _file_hash(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()[:16]


def cache_key(tokenizer_dir: str, max_length: int, source: str) -> str:
  """Changes when tokenizer.json, the max length or the ``source`` fingerprint change."""
  from mtl_jax.pretrained.hf_bert import tokenizer_fingerprint
  parts = [f"v{CACHE_VERSION}", tokenizer_fingerprint(tokenizer_dir), str(max_length), source]
  return hashlib.sha256("|".join(parts).encode()).hexdigest()[:24]


def cached_tokenize(cached: str, read: Callable[[], GlueSplit], tokenizer_dir: str,
                    max_length: int) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
  """Loads the .npz at ``cached``, or tokenizes ``read()`` and writes it there atomically."""
  from mtl_jax.pretrained import hf_bert
  if os.path.isfile(cached):
    with np.load(cached) as z:
      inputs = {k: z[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
      labels = z["labels"] if bool(z["has_labels"]) else None
    return inputs, labels
  raw = read()
  max_position = None
  if hf_bert.is_hf_dir(tokenizer_dir):
    max_position = hf_bert.read_config(tokenizer_dir).get("max_position_embeddings")
  tok = hf_bert.load_tokenizer(tokenizer_dir)
  inputs = hf_bert.tokenize(tok, raw.text, raw.pair, max_length=max_length,
                            max_position=max_position)
  os.makedirs(os.path.dirname(cached) or ".", exist_ok=True)
  tmp = cached + f".tmp{os.getpid()}.npz"
  labels = raw.labels
  np.savez(tmp, **inputs, labels=labels if labels is not None else np.zeros(0),
           has_labels=labels is not None)
  os.replace(tmp, cached)  # atomic: concurrent readers never see half a file
  return inputs, labels


def tokenized_split(task: str, data_dir: str, split: str, tokenizer_dir: str,
                    max_length: int = 128, cache_dir: Optional[str] = None
                    ) -> Tuple[Dict[str, np.ndarray], Optional[np.ndarray]]:
  """(inputs dict of int32 [N, max_length], labels or None), cached on disk.

  ``cache_dir`` None: ``<data_dir>/.mtl_jax_cache``. A cache hit reads only
  the .npz (and hashes the files that key it).
  """
  t = get_task(task)
  if split not in t.files:
    raise KeyError(f"GLUE {task}: unknown split {split!r}; valid: {sorted(t.files)}")
  path = os.path.join(data_dir, t.files[split])
  if not os.path.isfile(path):
    raise FileNotFoundError(f"GLUE file {path} does not exist")
  cache_dir = cache_dir or os.path.join(data_dir, ".mtl_jax_cache")
  key = cache_key(tokenizer_dir, max_length, f"{task}/{split}/{_file_hash(path)}")
  return cached_tokenize(os.path.join(cache_dir, f"{task}_{split}_{key}.npz"),
                         lambda: read_split(task, data_dir, split), tokenizer_dir, max_length)


def make_splits(train, dev, name: str, holdout: float, seed: int,
                max_examples: Optional[int]) -> DataSplits:
  """DataSplits from (inputs, labels) of train and dev; see ``glue`` for ``holdout``."""
  if not 0.0 <= holdout < 1.0:
    raise ValueError(f"glue: holdout must be in [0, 1), got {holdout}")
  if max_examples is not None:
    train, dev = _take(*train, slice(0, max_examples)), _take(*dev, slice(0, max_examples))
  if not holdout:
    return DataSplits(_dataset(*train, name), _dataset(*dev, name))
  n = len(train[0]["input_ids"])
  perm = np.random.default_rng(seed).permutation(n)
  k = int(round(n * holdout))
  if not 0 < k < n:
    raise ValueError(f"glue: holdout {holdout} of {n} training examples leaves an empty split")
  return DataSplits(_dataset(*_take(*train, np.sort(perm[k:])), name),
                    _dataset(*_take(*train, np.sort(perm[:k])), name), _dataset(*dev, name))


def question_groups(questions: Sequence[str]) -> np.ndarray:
  """Group id per row: rows with the same question share it (first-appearance order)."""
  index: Dict[str, int] = {}
  return np.array([index.setdefault(q, len(index)) for q in questions], np.int64)


def ranking_labels(split: GlueSplit) -> np.ndarray:
  """QNLI as ranking (kind ``grouped_ranking``): float32 [N, 2] of (question group, relevance).

  Relevance is 1 for ``entailment`` (the sentence answers the question), 0
  otherwise; GLUE's QNLI v2 rows are grouped by their question text.
  """
  groups = question_groups(split.text)
  relevance = (split.labels == TASKS["qnli"].labels.index("entailment")).astype(np.float32)
  return np.stack([groups.astype(np.float32), relevance], 1)


def _dataset(inputs, labels, name: str) -> ArrayDataset:
  n = len(inputs["input_ids"])
  if labels is None:  # unlabelled (test) split: every example masked
    return ArrayDataset(inputs, {name: np.zeros(n, np.int32)}, {name: np.zeros(n, bool)})
  return ArrayDataset(inputs, {name: labels}, {name: np.ones(n, bool)})


def _take(inputs, labels, idx):
  return {k: v[idx] for k, v in inputs.items()}, (None if labels is None else labels[idx])


@DATASETS.register("glue")
def glue(task: str, data_dir: str, tokenizer: str, max_length: int = 128,
         task_name: Optional[str] = None, holdout: float = 0.0, dev: str = "dev",
         cache_dir: Optional[str] = None, max_examples: Optional[int] = None,
         seed: int = 0, qnli_as: str = "classification") -> DataSplits:
  """One GLUE task as DataSplits with one task ``task_name`` (default: ``task``).

  ``data_dir`` is the task's folder (or a GLUE root holding e.g. ``MRPC/``);
  ``tokenizer`` a directory with tokenizer.json (the checkpoint's). GLUE's
  test labels are private, so with ``holdout`` = 0 validation is the dev
  split and there is no test; with ``holdout`` in (0, 1) that fraction of
  train (shuffled with ``seed``) is the validation split used for choices
  and dev becomes the test split, reported once. ``dev`` picks MNLI's
  dev_matched or dev_mismatched. ``qnli_as="ranking"`` labels QNLI for the
  ``grouped_ranking`` kind (``ranking_labels``: rows grouped by question).
  """
  key = task_key(task)
  t = TASKS[key]
  if not os.path.isfile(os.path.join(data_dir, t.files["train"])):
    sub = os.path.join(data_dir, DIR_NAMES[key])
    if os.path.isdir(sub):
      data_dir = sub
  if qnli_as not in ("classification", "ranking"):
    raise ValueError(f"glue: qnli_as must be 'classification' or 'ranking', got {qnli_as!r}")
  if qnli_as == "ranking" and key != "qnli":
    raise ValueError(f"glue: qnli_as='ranking' is for task qnli, not {task!r}")
  name = task_name or key
  kw = dict(tokenizer_dir=tokenizer, max_length=max_length, cache_dir=cache_dir)
  train = tokenized_split(key, data_dir, "train", **kw)
  dev_split = tokenized_split(key, data_dir, dev, **kw)
  if qnli_as == "ranking":
    train = (train[0], ranking_labels(read_split(key, data_dir, "train")))
    dev_split = (dev_split[0], ranking_labels(read_split(key, data_dir, dev)))
  return make_splits(train, dev_split, name, holdout, seed, max_examples)
