"""ERNIE 2.0's self-supervised pretraining tasks, built from a plain-text corpus.

Each task is a registered dataset over ``text_corpus`` (Sun et al. 2020,
section "Pre-training Tasks"; the embedded corpus by default), split by
document (``text_corpus.split_documents``), one task per dataset:

  ernie_capitalization  per token, binary: does the word start with a capital
                        letter in the original text (the tokenizer lowercases)
  ernie_token_document  per token, binary: does this token also appear in
                        another segment of the same document
  ernie_reorder         k consecutive sentences, shuffled: which of the k!
                        permutations was applied (k! classes)
  ernie_distance        a sentence pair: adjacent (0), same document (1),
                        other document (2)
  ernie_masking         word (whole-word) or phrase (contiguous spans of
                        words) masking, for the ``masked_lm`` kind

Every task is a per-token label ``[N, L]`` with a per-token mask, so one
encoder with per-token features (``pooling="none"``) serves them all: the
sentence-level tasks (reorder, distance) are labelled at the [CLS] position
only (``token_classification`` with one labelled token per sequence is a
[CLS] classifier, as BERT's NSP). Inputs are ``input_ids``,
``attention_mask``, ``token_type_ids`` [N, L]; a mixture of these datasets
needs one input structure, so every builder takes ``max_predictions``: the
masking builder's budget of predictions per sequence, and for the others
the width of a zero ``masked_lm_positions`` placeholder (0: none).

Everything is a pure function of (corpus, options, seed): equal options give
equal arrays, so resume and task mixing are bitwise.
"""

import functools
import itertools
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mtl_jax.data import text_corpus as tc
from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

POSITIONS = "masked_lm_positions"  # the masked_lm kind's inputs key
SPLITS = ("train", "validation", "test")


@functools.lru_cache(maxsize=4)
def _corpus(path, tokenizer, doc_split, sentences, max_documents) -> tc.Corpus:
  return tc.load_corpus(path, tokenizer, doc_split, sentences, max_documents)


def corpus_and_splits(path=None, tokenizer=None, doc_split="blank_lines", sentences="punct",
                      max_documents=None, split=(0.8, 0.1, 0.1), split_seed=0):
  """The (cached) corpus and its document ids per split."""
  corpus = _corpus(path, tokenizer, doc_split, sentences, max_documents)
  parts = tc.split_documents(corpus.num_documents, tuple(split), split_seed)
  return corpus, dict(zip(SPLITS, parts))


def _finish(corpus: tc.Corpus, rows: Sequence[np.ndarray], types: Sequence[np.ndarray],
            labels: Sequence[np.ndarray], label_mask: Sequence[np.ndarray], max_length: int
            ) -> Tuple[Dict[str, np.ndarray], np.ndarray, np.ndarray]:
  """Pads rows of ids (with [CLS]/[SEP] already in) to ``max_length``."""
  n = len(rows)
  pad = corpus.special["[PAD]"]
  ids = np.full((n, max_length), pad, np.int32)
  tt = np.zeros((n, max_length), np.int32)
  att = np.zeros((n, max_length), np.int32)
  y = np.zeros((n, max_length), np.int32)
  m = np.zeros((n, max_length), bool)
  for i, (r, t, lab, lm) in enumerate(zip(rows, types, labels, label_mask)):
    ids[i, :len(r)], tt[i, :len(r)], att[i, :len(r)] = r, t, 1
    y[i, :len(r)], m[i, :len(r)] = lab, lm
  return {"input_ids": ids, "attention_mask": att, "token_type_ids": tt}, y, m


# ---------------------------------------------------------------------------- per-token tasks

def capitalization_flags(path=None, tokenizer=None, doc_split="blank_lines", sentences="punct",
                         max_documents=None) -> np.ndarray:
  """bool [corpus tokens], aligned with ``load_corpus(...).ids``: the original text of the token
  starts with an upper-case letter (read through the tokenizer's offsets into the raw text)."""
  from mtl_jax.pretrained import hf_bert
  tok = hf_bert.load_tokenizer(tokenizer or tc._default_tokenizer())
  tok.no_padding()
  tok.no_truncation()
  docs = tc.read_documents(path, doc_split)
  if max_documents is not None:
    docs = docs[:max_documents]
  flat = [s for _, text in docs for s in tc.split_sentences(text, sentences)]
  flags = []
  for text, enc in zip(flat, tok.encode_batch(flat, add_special_tokens=False)):
    flags.extend(text[a:b][:1].isupper() for a, b in enc.offsets)
  return np.asarray(flags, bool)


def _segments(corpus: tc.Corpus, docs, max_length: int):
  """``pack_documents`` rows with, per row, the corpus offsets of its tokens (rows keep
  each document's tokens in order, so the k-th real token of a document's rows is its
  k-th token)."""
  packed = tc.pack_documents(corpus, docs, max_length)
  real = packed["attention_mask"].sum(1) - 2
  offsets, seen = [], {}
  first = {int(d): int(corpus.sentence_starts[corpus.document_starts[d]]) for d in docs}
  for d, n in zip(packed["document"], real):
    start = first[int(d)] + seen.get(int(d), 0)
    seen[int(d)] = seen.get(int(d), 0) + int(n)
    offsets.append(np.arange(start, start + n))
  for row, off in zip(packed["input_ids"], offsets):  # the alignment holds (cheap to check)
    assert np.array_equal(row[1:1 + len(off)], corpus.ids[off])
  return packed, offsets


def capitalization_task(corpus: tc.Corpus, flags: np.ndarray, docs, max_length: int):
  """Labels 1 where the word starts with a capital; mask: word-start tokens (not ``##``
  continuations, not special tokens)."""
  packed, offsets = _segments(corpus, docs, max_length)
  y = np.zeros_like(packed["input_ids"])
  m = np.zeros(y.shape, bool)
  for i, off in enumerate(offsets):
    y[i, 1:1 + len(off)] = flags[off]
    m[i, 1:1 + len(off)] = ~corpus.continuation[corpus.ids[off]]
  return {k: packed[k] for k in ("input_ids", "attention_mask", "token_type_ids")}, y, m


def token_document_task(corpus: tc.Corpus, docs, max_length: int):
  """Segments = ``pack_documents`` rows. Label 1 where the token id also occurs in another
  segment of its document; every real non-special token is labelled. Documents of one
  segment have no other segment and are left out."""
  packed, offsets = _segments(corpus, docs, max_length)
  doc = packed["document"]
  keep = np.zeros(len(doc), bool)
  y = np.zeros_like(packed["input_ids"])
  m = np.zeros(y.shape, bool)
  for d in np.unique(doc):
    rows = np.flatnonzero(doc == d)
    if len(rows) < 2:
      continue
    keep[rows] = True
    count = {}  # token id -> number of segments holding it
    for r in rows:
      for v in np.unique(corpus.ids[offsets[r]]):
        count[v] = count.get(v, 0) + 1
    for r in rows:
      ids = corpus.ids[offsets[r]]
      here = {v: 1 for v in np.unique(ids)}
      y[r, 1:1 + len(ids)] = [count[v] - here[v] > 0 for v in ids]
      m[r, 1:1 + len(ids)] = True
  inputs = {k: packed[k][keep] for k in ("input_ids", "attention_mask", "token_type_ids")}
  return inputs, y[keep], m[keep]


# ---------------------------------------------------------------------------- word / phrase masking

def span_mask(input_ids: np.ndarray, attention_mask: np.ndarray, corpus: tc.Corpus, seed,
              rate: float = 0.15, max_predictions: int = 20, max_span: int = 1):
  """Masks whole words (``max_span=1``) or phrases: spans of 1..``max_span`` consecutive words
  (ERNIE 1.0's phrase-level masking, with contiguous word spans standing in for its chunker's
  phrases). Per row ``n = min(max_predictions, max(1, round(rate * candidates)))`` tokens
  are selected (special tokens never); spans are tried from a seeded order of start words
  and skipped when they would overflow ``n``. A selected token becomes [MASK] (0.8), a random
  non-special token (0.1) or stays (0.1), as BERT. Returns (corrupted ids, positions [N, K]
  sorted, 0 where unused; targets [N, K]; weights bool [N, K])."""
  if not 0.0 < rate < 1.0:
    raise ValueError(f"ernie_masking: rate must be in (0, 1), got {rate}")
  if max_span < 1 or max_predictions < 1:
    raise ValueError(f"ernie_masking: max_span and max_predictions must be >= 1, got "
                     f"{max_span}, {max_predictions}")
  rng = np.random.default_rng(seed)
  ids = np.array(input_ids, np.int32)
  special = np.isin(ids, corpus.special_ids())
  normal = np.setdiff1d(np.arange(corpus.vocab_size), corpus.special_ids())
  n_rows, k = len(ids), int(max_predictions)
  positions = np.zeros((n_rows, k), np.int32)
  targets = np.zeros((n_rows, k), np.int32)
  weights = np.zeros((n_rows, k), bool)
  for r in range(n_rows):
    cand = np.flatnonzero((attention_mask[r] > 0) & ~special[r])
    if not len(cand):
      continue
    words = []
    for i in cand:  # a token and the ## continuations right after it
      if words and corpus.continuation[ids[r, i]] and words[-1][-1] == i - 1:
        words[-1].append(int(i))
      else:
        words.append([int(i)])
    budget = min(k, max(1, int(round(rate * len(cand)))))
    chosen, taken = [], np.zeros(len(words), bool)
    for w in rng.permutation(len(words)):
      span = int(rng.integers(1, max_span + 1))
      group = [j for j in range(w, min(w + span, len(words))) if not taken[j]]
      size = sum(len(words[j]) for j in group)
      if not group or len(chosen) + size > budget:
        continue
      taken[group] = True
      chosen += [i for j in group for i in words[j]]
      if len(chosen) == budget:
        break
    chosen = np.sort(np.asarray(chosen, np.int64))
    positions[r, :len(chosen)] = chosen
    targets[r, :len(chosen)] = ids[r, chosen]
    weights[r, :len(chosen)] = True
    u = rng.random(len(chosen))
    ids[r, chosen[u < 0.8]] = corpus.special["[MASK]"]
    rand = chosen[(u >= 0.8) & (u < 0.9)]
    ids[r, rand] = rng.choice(normal, len(rand))
  return ids, positions, targets, weights


def masking_task(corpus: tc.Corpus, docs, max_length: int, seed, rate: float = 0.15,
                 max_predictions: int = 20, max_span: int = 1):
  packed = tc.pack_documents(corpus, docs, max_length)
  ids, pos, y, w = span_mask(packed["input_ids"], packed["attention_mask"], corpus, seed, rate,
                             max_predictions, max_span)
  inputs = {"input_ids": ids, "attention_mask": packed["attention_mask"],
            "token_type_ids": packed["token_type_ids"], POSITIONS: pos}
  return inputs, y, w


# ---------------------------------------------------------------------------- sentence tasks

def permutations(k: int) -> List[Tuple[int, ...]]:
  """Class c of sentence reordering is ``permutations(k)[c]`` (itertools order)."""
  return list(itertools.permutations(range(k)))


def _truncate(parts: Sequence[np.ndarray], room: int) -> List[np.ndarray]:
  """Longest-first truncation of ``parts`` to ``room`` tokens in all."""
  parts = [np.asarray(p) for p in parts]
  while sum(len(p) for p in parts) > room:
    i = int(np.argmax([len(p) for p in parts]))
    parts[i] = parts[i][:-1]
  return parts


def reorder_task(corpus: tc.Corpus, docs, max_length: int, k: int, seed) -> tuple:
  """Windows of ``k`` consecutive sentences (non-overlapping, per document), shown in a
  seeded random order ``pi``: ``[CLS] s_pi0 [SEP] s_pi1 [SEP] ...``; label = the index of
  ``pi`` in ``permutations(k)`` at [CLS]. A sentence longer than its share is truncated."""
  if k < 2:
    raise ValueError(f"ernie_reorder: segments must be >= 2 (k! classes), got {k}")
  if max_length < 2 * k + 1:
    raise ValueError(f"ernie_reorder: max_length {max_length} cannot hold {k} segments "
                     f"([CLS] and a [SEP] per segment need {k + 1}, plus a token each)")
  perms = permutations(k)
  rng = np.random.default_rng(seed)
  sp = corpus.special
  rows, types, labels, lmask = [], [], [], []
  for d in docs:
    sents = corpus.sentences(int(d))
    for w in range(0, len(sents) - k + 1, k):
      c = int(rng.integers(len(perms)))
      parts = _truncate([sents[w + j] for j in perms[c]], max_length - 1 - k)
      row = np.concatenate([[sp["[CLS]"]]] + [np.append(p, sp["[SEP]"]) for p in parts])
      rows.append(row)
      types.append(np.zeros(len(row), np.int32))
      lab = np.zeros(len(row), np.int32)
      lab[0] = c
      labels.append(lab)
      lm = np.zeros(len(row), bool)
      lm[0] = True
      lmask.append(lm)
  return _finish(corpus, rows, types, labels, lmask, max_length)


def check_reorder(corpus: tc.Corpus, k: int) -> None:
  """A corpus whose documents all have fewer than ``k`` sentences makes no example."""
  most = int(np.diff(corpus.document_starts).max())
  if most < k:
    raise ValueError(f"ernie_reorder: no document of the corpus is long enough for sentence "
                     f"reordering with segments={k}: the longest has {most} sentence(s); use "
                     f"fewer segments or a corpus with longer documents")


def distance_task(corpus: tc.Corpus, docs, max_length: int, seed) -> tuple:
  """Anchor = every sentence of ``docs``; a seeded class among the feasible ones: 0 the next
  sentence (adjacent), 1 a sentence of the same document at distance >= 2, 2 a sentence of
  another document of the split. ``[CLS] A [SEP] B [SEP]`` (types 0 / 1), label at [CLS]."""
  rng = np.random.default_rng(seed)
  sp = corpus.special
  docs = [int(d) for d in docs]
  rows, types, labels, lmask = [], [], [], []
  for d in docs:
    lo, hi = int(corpus.document_starts[d]), int(corpus.document_starts[d + 1])
    for s in range(lo, hi):
      options = []
      if s + 1 < hi:
        options.append(0)
      far = [j for j in range(lo, hi) if abs(j - s) >= 2]
      if far:
        options.append(1)
      if len(docs) > 1:
        options.append(2)
      if not options:
        continue
      c = options[int(rng.integers(len(options)))]
      if c == 0:
        j = s + 1
      elif c == 1:
        j = far[int(rng.integers(len(far)))]
      else:
        others = [e for e in docs if e != d]
        other = others[int(rng.integers(len(others)))]
        olo, ohi = int(corpus.document_starts[other]), int(corpus.document_starts[other + 1])
        j = int(rng.integers(olo, ohi))
      a, b = _truncate([corpus.sentence(s), corpus.sentence(j)], max_length - 3)
      row = np.concatenate([[sp["[CLS]"]], a, [sp["[SEP]"]], b, [sp["[SEP]"]]])
      rows.append(row)
      types.append(np.r_[np.zeros(len(a) + 2, np.int32), np.ones(len(b) + 1, np.int32)])
      lab = np.zeros(len(row), np.int32)
      lab[0] = c
      labels.append(lab)
      lm = np.zeros(len(row), bool)
      lm[0] = True
      lmask.append(lm)
  return _finish(corpus, rows, types, labels, lmask, max_length)


# ---------------------------------------------------------------------------- registered datasets

CORPUS_ARGS = ("path", "tokenizer", "doc_split", "sentences", "max_documents")


def _dataset(name: str, task: str, make, max_length: int, max_predictions: int, corpus_args,
             split, split_seed) -> DataSplits:
  """Runs ``make(corpus, docs, split_index)`` per split into an ArrayDataset of one task."""
  if max_length < 3:
    raise ValueError(f"{name}: max_length must be >= 3, got {max_length}")
  corpus, parts = corpus_and_splits(**corpus_args, split=split, split_seed=split_seed)
  out = {}
  for i, sp in enumerate(SPLITS):
    if not len(parts[sp]):
      continue
    inputs, y, m = make(corpus, parts[sp], i)
    if not len(y):
      raise ValueError(f"{name}: the {sp} split ({len(parts[sp])} documents) makes no example; "
                       f"give the corpus more or longer documents or change `split`")
    if max_predictions and POSITIONS not in inputs:  # one structure in a mixture
      inputs[POSITIONS] = np.zeros((len(y), int(max_predictions)), np.int32)
    out[sp] = ArrayDataset(inputs, {task: y}, {task: m})
  return DataSplits(out["train"], out["validation"], out.get("test"))


@DATASETS.register("ernie_capitalization")
def ernie_capitalization(path: Optional[str] = None, tokenizer: Optional[str] = None,
                         doc_split: str = "blank_lines", sentences: str = "punct",
                         max_documents: Optional[int] = None, max_length: int = 64,
                         max_predictions: int = 0, split=(0.8, 0.1, 0.1), split_seed: int = 0
                         ) -> DataSplits:
  """Task ``capitalization`` (token_classification, 2 classes)."""
  args = dict(path=path, tokenizer=tokenizer, doc_split=doc_split, sentences=sentences,
              max_documents=max_documents)
  flags = capitalization_flags(**args)
  def make(corpus, docs, _):
    if len(flags) != corpus.num_tokens:
      raise AssertionError("capitalization flags do not align with the corpus tokens")
    return capitalization_task(corpus, flags, docs, max_length)
  return _dataset("ernie_capitalization", "capitalization", make, max_length, max_predictions,
                  args, split, split_seed)


@DATASETS.register("ernie_token_document")
def ernie_token_document(path: Optional[str] = None, tokenizer: Optional[str] = None,
                         doc_split: str = "blank_lines", sentences: str = "punct",
                         max_documents: Optional[int] = None, max_length: int = 64,
                         max_predictions: int = 0, split=(0.8, 0.1, 0.1), split_seed: int = 0
                         ) -> DataSplits:
  """Task ``token_document`` (token_classification, 2 classes); segments of ``max_length``."""
  args = dict(path=path, tokenizer=tokenizer, doc_split=doc_split, sentences=sentences,
              max_documents=max_documents)
  return _dataset("ernie_token_document", "token_document",
                  lambda corpus, docs, _: token_document_task(corpus, docs, max_length),
                  max_length, max_predictions, args, split, split_seed)


@DATASETS.register("ernie_reorder")
def ernie_reorder(path: Optional[str] = None, tokenizer: Optional[str] = None,
                  doc_split: str = "blank_lines", sentences: str = "punct",
                  max_documents: Optional[int] = None, max_length: int = 64,
                  max_predictions: int = 0, segments: int = 3, split=(0.8, 0.1, 0.1),
                  split_seed: int = 0, seed: int = 0) -> DataSplits:
  """Task ``reorder`` (token_classification, ``segments``! classes, labelled at [CLS])."""
  args = dict(path=path, tokenizer=tokenizer, doc_split=doc_split, sentences=sentences,
              max_documents=max_documents)
  check_reorder(_corpus(*(args[k] for k in CORPUS_ARGS)), int(segments))
  return _dataset("ernie_reorder", "reorder",
                  lambda corpus, docs, i: reorder_task(corpus, docs, max_length, int(segments),
                                                       [seed, i]),
                  max_length, max_predictions, args, split, split_seed)


@DATASETS.register("ernie_distance")
def ernie_distance(path: Optional[str] = None, tokenizer: Optional[str] = None,
                   doc_split: str = "blank_lines", sentences: str = "punct",
                   max_documents: Optional[int] = None, max_length: int = 64,
                   max_predictions: int = 0, split=(0.8, 0.1, 0.1), split_seed: int = 0,
                   seed: int = 0) -> DataSplits:
  """Task ``distance`` (token_classification, 3 classes, labelled at [CLS])."""
  args = dict(path=path, tokenizer=tokenizer, doc_split=doc_split, sentences=sentences,
              max_documents=max_documents)
  return _dataset("ernie_distance", "distance",
                  lambda corpus, docs, i: distance_task(corpus, docs, max_length, [seed, i]),
                  max_length, max_predictions, args, split, split_seed)


@DATASETS.register("ernie_masking")
def ernie_masking(path: Optional[str] = None, tokenizer: Optional[str] = None,
                  doc_split: str = "blank_lines", sentences: str = "punct",
                  max_documents: Optional[int] = None, max_length: int = 64,
                  max_predictions: int = 20, mode: str = "word", max_span: int = 3,
                  rate: float = 0.15, split=(0.8, 0.1, 0.1), split_seed: int = 0,
                  seed: int = 0) -> DataSplits:
  """Task ``masking`` (the ``masked_lm`` kind, num_outputs = vocabulary size): ``mode="word"``
  masks whole words, ``"phrase"`` spans of up to ``max_span`` words; masked once per split
  (static masking, seeded)."""
  if mode not in ("word", "phrase"):
    raise ValueError(f"ernie_masking: unknown mode {mode!r}; valid: ['word', 'phrase']")
  span = 1 if mode == "word" else int(max_span)
  args = dict(path=path, tokenizer=tokenizer, doc_split=doc_split, sentences=sentences,
              max_documents=max_documents)
  return _dataset("ernie_masking", "masking",
                  lambda corpus, docs, i: masking_task(corpus, docs, max_length, [seed, i], rate,
                                                       max_predictions, span),
                  max_length, max_predictions, args, split, split_seed)


def at_cls(ds: ArrayDataset, max_predictions: int = 0) -> ArrayDataset:
  """A sequence-level split (labels [N]) as labels at the [CLS] position ([N, L], mask there
  only), so it joins the per-token ERNIE model; optional zero ``masked_lm_positions``."""
  inputs = dict(ds.inputs)
  n, length = inputs["input_ids"].shape
  labels, mask = {}, {}
  for t, y in ds.labels.items():
    if np.ndim(y) != 1:
      raise ValueError(f"ernie_pairs: task {t!r} has labels of shape {np.shape(y)}; only one "
                       f"class label per pair moves to [CLS]")
    labels[t] = np.zeros((n, length), np.int32)
    labels[t][:, 0] = y
    mask[t] = np.zeros((n, length), bool)
    mask[t][:, 0] = ds.mask[t]
  if max_predictions:
    inputs[POSITIONS] = np.zeros((n, int(max_predictions)), np.int32)
  return ArrayDataset(inputs, labels, mask)


@DATASETS.register("ernie_pairs")
def ernie_pairs(max_predictions: int = 0, **glue_options) -> DataSplits:
  """Your own sentence pairs for ERNIE's IR relevance or discourse relation tasks: any
  GLUE-format pair folder (``glue`` dataset options: task layout, data_dir, tokenizer, ...),
  labels moved to [CLS] (``token_classification``, one class per pair)."""
  from mtl_jax.data.glue import glue
  if "task" not in glue_options:
    raise ValueError("ernie_pairs: give `task`, the GLUE layout of your pair files (e.g. "
                     "'mnli' for 3 classes, 'rte' or 'qnli' for 2) and `data_dir`, `tokenizer`")
  d = glue(**glue_options)
  return DataSplits(*(None if s is None else at_cls(s, max_predictions)
                      for s in (d.train, d.validation, d.test)))
