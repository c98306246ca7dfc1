"""Plain-text corpora -> documents -> sentences -> token ids, for self-supervised text tasks.

A corpus is read once into a ``Corpus``: every sentence's WordPiece ids
(no special tokens), grouped by document, in flat arrays so a large corpus
costs three arrays rather than millions of Python lists. Builders of
self-supervised tasks (masked LM here, ERNIE's sentence tasks elsewhere) take
a ``Corpus``, split it by *document* (``split_documents``: no document
contributes to two splits) and make their own fixed-length sequences
(``pack_documents`` for MLM-style spans).

Sources (``path``):
  None      the embedded default: the Python standard library's
            ``pydoc_data/topics.py`` (the English text of ``help('topic')``,
            one document per topic; PSF licence; docs/datasets.md)
  a file    documents separated by blank lines (BERT's pretraining format)
  a folder  every ``*.txt`` file under it, sorted
  a glob    every matching file, sorted
``doc_split="file"`` makes each file one document instead. Sentences are cut
by a punctuation rule (``sentences="punct"``) or one per line
(``sentences="lines"``, BERT's format). The ``fingerprint`` hashes the text,
the tokenizer and these options: equal fingerprints, equal token ids.
"""

import dataclasses
import glob as globlib
import hashlib
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits

DOC_SPLITS = ("blank_lines", "file")
SENTENCE_SPLITS = ("punct", "lines")
EMBEDDED = "pydoc_topics"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by
# white space and an upper-case letter, a digit or an opening quote.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_RULE_LINE = re.compile(r"^\s*([*=\-~^#_+])\1{2,}\s*$")  # reST underlines: ******, =====


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
  """Token ids of every sentence of every document, in flat arrays.

  ``ids[sentence_starts[s]:sentence_starts[s + 1]]`` is sentence ``s``;
  document ``d`` holds sentences ``document_starts[d]:document_starts[d + 1]``.
  ``continuation[v]`` is True when token ``v`` continues a word (WordPiece
  ``##``): whole-word masking groups a token with its continuations.
  """
  ids: np.ndarray
  sentence_starts: np.ndarray
  document_starts: np.ndarray
  names: Tuple[str, ...]
  special: Dict[str, int]          # "[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]" -> id
  vocab_size: int
  continuation: np.ndarray         # bool [vocab_size]
  fingerprint: str

  @property
  def num_documents(self) -> int:
    return len(self.document_starts) - 1

  @property
  def num_sentences(self) -> int:
    return len(self.sentence_starts) - 1

  @property
  def num_tokens(self) -> int:
    return len(self.ids)

  def sentence(self, s: int) -> np.ndarray:
    return self.ids[self.sentence_starts[s]:self.sentence_starts[s + 1]]

  def sentences(self, d: int) -> List[np.ndarray]:
    """Document ``d`` as a list of sentences, each an int32 array of token ids."""
    return [self.sentence(s) for s in range(self.document_starts[d], self.document_starts[d + 1])]

  def document_tokens(self, d: int) -> int:
    lo, hi = self.document_starts[d], self.document_starts[d + 1]
    return int(self.sentence_starts[hi] - self.sentence_starts[lo])

  def special_ids(self) -> np.ndarray:
    return np.array(sorted(self.special.values()), np.int32)


# --- reading ----------------------------------------------------------------------

def embedded_documents() -> List[Tuple[str, str]]:
  """(topic, text) of the standard library's pydoc topics, sorted by topic."""
  from pydoc_data import topics
  return sorted(topics.topics.items())


def source_files(path: str) -> List[str]:
  """The files ``path`` names: itself, every ``*.txt`` under a folder, or a glob's matches."""
  if os.path.isfile(path):
    return [path]
  if os.path.isdir(path):
    files = sorted(globlib.glob(os.path.join(path, "**", "*.txt"), recursive=True))
    if not files:
      raise FileNotFoundError(f"text_corpus: folder {path} holds no *.txt file")
    return files
  if globlib.has_magic(path):
    files = sorted(f for f in globlib.glob(path, recursive=True) if os.path.isfile(f))
    if not files:
      raise FileNotFoundError(f"text_corpus: glob {path!r} matches no file")
    return files
  raise FileNotFoundError(f"text_corpus: {path} does not exist (give a file, a folder of "
                          "*.txt files or a glob; path=None is the embedded corpus)")


def read_documents(path: Optional[str] = None, doc_split: str = "blank_lines"
                   ) -> List[Tuple[str, str]]:
  """(name, text) of every non-empty document of the source; see the module docstring."""
  if doc_split not in DOC_SPLITS:
    raise ValueError(f"text_corpus: unknown doc_split {doc_split!r}; valid: {list(DOC_SPLITS)}")
  if path is None:
    return embedded_documents()
  docs = []
  for f in source_files(path):
    with open(f, encoding="utf-8") as fh:
      text = fh.read()
    if doc_split == "file":
      if text.strip():
        docs.append((f, text))
      continue
    for i, block in enumerate(re.split(r"\n[ \t]*\n", text)):
      if block.strip():
        docs.append((f"{f}#{i}", block))
  return docs


def split_sentences(text: str, mode: str = "punct") -> List[str]:
  """Sentences of one document. ``punct``: paragraphs (blank lines) are joined and cut
  after . ! ? before a capital/digit; reST underline lines are dropped. ``lines``: one per line."""
  if mode not in SENTENCE_SPLITS:
    raise ValueError(f"text_corpus: unknown sentences mode {mode!r}; valid: "
                     f"{list(SENTENCE_SPLITS)}")
  if mode == "lines":
    return [ln.strip() for ln in text.splitlines() if ln.strip()]
  out = []
  for para in re.split(r"\n[ \t]*\n", text):
    lines = [ln for ln in para.splitlines() if not _RULE_LINE.match(ln)]
    flat = " ".join(" ".join(lines).split())
    if flat:
      out.extend(s for s in _SENTENCE_END.split(flat) if s.strip())
  return out


# --- tokenizing ---------------------------------------------------------------------

def _default_tokenizer() -> str:
  from mtl_jax.pretrained import minilm_dir
  return minilm_dir()


def special_tokens(tok) -> Dict[str, int]:
  """Ids of BERT's special tokens; an error names the ones the vocabulary lacks."""
  ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
  missing = [t for t, i in ids.items() if i is None]
  if missing:
    raise ValueError(f"text_corpus: the tokenizer has no {missing} token(s); masked-LM and "
                     f"sentence tasks need {list(SPECIAL_TOKENS)} (a BERT WordPiece vocabulary)")
  return ids


def continuation_table(tok) -> np.ndarray:
  """bool [vocab]: True for WordPiece continuation tokens (``##...``)."""
  table = np.zeros(tok.get_vocab_size(with_added_tokens=True), bool)
  for token, i in tok.get_vocab(with_added_tokens=True).items():
    table[i] = token.startswith("##")
  return table


def fingerprint(docs: Sequence[Tuple[str, str]], tokenizer_fp: str, options: str) -> str:
  h = hashlib.sha256(f"{tokenizer_fp}|{options}".encode())
  for name, text in docs:
    h.update(name.encode() + b"\0" + text.encode() + b"\0")
  return h.hexdigest()[:16]


def load_corpus(path: Optional[str] = None, tokenizer: Optional[str] = None,
                doc_split: str = "blank_lines", sentences: str = "punct",
                max_documents: Optional[int] = None, cache_dir: Optional[str] = None) -> Corpus:
  """Reads and tokenizes a corpus (module docstring); ``tokenizer`` is a directory with
  tokenizer.json (default: the MiniLM checkpoint's). Empty corpora are an error.

  ``cache_dir``: the token ids are saved there as ``corpus_<fingerprint>.npz`` and read
  back while the fingerprint (text, tokenizer, options) is unchanged.
  """
  from mtl_jax.pretrained import hf_bert
  tokenizer = tokenizer or _default_tokenizer()
  tok = hf_bert.load_tokenizer(tokenizer)
  tok.no_padding()  # tokenizer.json may carry padding/truncation settings (MiniLM: 128)
  tok.no_truncation()
  special = special_tokens(tok)
  docs = read_documents(path, doc_split)
  if max_documents is not None:
    docs = docs[:max_documents]
  source = EMBEDDED if path is None else path
  options = f"doc_split={doc_split}|sentences={sentences}|max_documents={max_documents}"
  fp = fingerprint(docs, hf_bert.tokenizer_fingerprint(tokenizer), options)
  cached = os.path.join(cache_dir, f"corpus_{fp}.npz") if cache_dir else None
  extra = dict(special=special, vocab_size=tok.get_vocab_size(with_added_tokens=True),
               continuation=continuation_table(tok), fingerprint=fp)
  if cached and os.path.isfile(cached):
    with np.load(cached) as z:
      return Corpus(ids=z["ids"], sentence_starts=z["sentence_starts"],
                    document_starts=z["document_starts"], names=tuple(z["names"].tolist()),
                    **extra)
  names, doc_sentences = [], []
  for name, text in docs:
    sents = split_sentences(text, sentences)
    if sents:
      names.append(name)
      doc_sentences.append(sents)
  if not names:
    raise ValueError(f"text_corpus: {source} holds no text (no non-blank document)")
  flat = [s for sents in doc_sentences for s in sents]
  encoded = tok.encode_batch(flat, add_special_tokens=False)
  lengths = np.array([len(e.ids) for e in encoded], np.int64)
  keep = lengths > 0  # a sentence of characters the tokenizer drops entirely
  ids = np.concatenate([np.asarray(e.ids, np.int32) for e, k in zip(encoded, keep) if k]
                       or [np.zeros(0, np.int32)])
  sentence_starts = np.concatenate([[0], np.cumsum(lengths[keep])])
  per_doc = np.array([len(s) for s in doc_sentences])
  doc_of = np.repeat(np.arange(len(names)), per_doc)[keep]
  counts = np.bincount(doc_of, minlength=len(names))
  nonempty = counts > 0
  if not nonempty.any():
    raise ValueError(f"text_corpus: {source} tokenizes to no token")
  document_starts = np.concatenate([[0], np.cumsum(counts[nonempty])])
  corpus = Corpus(ids=ids, sentence_starts=sentence_starts.astype(np.int64),
                  document_starts=document_starts.astype(np.int64),
                  names=tuple(n for n, k in zip(names, nonempty) if k), **extra)
  if cached:
    os.makedirs(cache_dir, exist_ok=True)
    tmp = cached + f".tmp{os.getpid()}.npz"
    np.savez(tmp, ids=corpus.ids, sentence_starts=corpus.sentence_starts,
             document_starts=corpus.document_starts, names=np.array(corpus.names))
    os.replace(tmp, cached)  # atomic: a concurrent reader never sees half a file
  return corpus


# --- splits and sequences -------------------------------------------------------------

def split_documents(num_documents: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                    seed: int = 0) -> List[np.ndarray]:
  """Sorted document ids of each split: a seeded permutation cut by ``fractions``.

  Every split with a positive fraction gets at least one document; too few
  documents for that is an error.
  """
  fractions = np.asarray(fractions, np.float64)
  if fractions.ndim != 1 or (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
    raise ValueError(f"text_corpus: split fractions must be >= 0 and sum to 1, got "
                     f"{fractions.tolist()}")
  wanted = int((fractions > 0).sum())
  if num_documents < wanted:
    raise ValueError(f"text_corpus: {num_documents} document(s) cannot fill {wanted} splits "
                     f"(fractions {fractions.tolist()}); splits are by document")
  sizes = np.floor(fractions * num_documents).astype(int)
  sizes[(fractions > 0) & (sizes == 0)] = 1
  sizes[int(np.argmax(fractions))] += num_documents - sizes.sum()
  perm = np.random.default_rng(seed).permutation(num_documents)
  cuts = np.cumsum(sizes)[:-1]
  return [np.sort(part) for part in np.split(perm, cuts)]


def pack_documents(corpus: Corpus, documents: Sequence[int], max_length: int
                   ) -> Dict[str, np.ndarray]:
  """Fixed-length ``[CLS] s_i s_i+1 ... [SEP]`` sequences from whole sentences.

  Consecutive sentences of one document fill a sequence up to
  ``max_length - 2`` tokens (a sequence never spans two documents: RoBERTa's
  DOC-SENTENCES); a sentence longer than a sequence fills the current one and
  continues in the next. Returns int32 [N, L]
  ``input_ids``, ``attention_mask``, ``token_type_ids`` and int32 [N]
  ``document`` (the document id of each sequence).
  """
  if max_length < 3:
    raise ValueError(f"text_corpus: max_length must be >= 3 ([CLS] x [SEP]), got {max_length}")
  room = max_length - 2
  rows, docs = [], []
  for d in documents:
    current: List[np.ndarray] = []
    size = 0
    for s in corpus.sentences(int(d)):
      if size + len(s) > room and len(s) <= room:  # a whole sentence that fits in a new row
        rows.append(np.concatenate(current))
        docs.append(d)
        current, size = [], 0
      while size + len(s) > room:  # a sentence longer than a row: fill this row, go on
        current.append(s[:room - size])
        s = s[room - size:]
        rows.append(np.concatenate(current))
        docs.append(d)
        current, size = [], 0
      if len(s):
        current.append(s)
        size += len(s)
    if current:
      rows.append(np.concatenate(current))
      docs.append(d)
  n = len(rows)
  sp = corpus.special
  ids = np.full((n, max_length), sp["[PAD]"], np.int32)
  mask = np.zeros((n, max_length), np.int32)
  for i, r in enumerate(rows):
    ids[i, 0], ids[i, 1:len(r) + 1], ids[i, len(r) + 1] = sp["[CLS]"], r, sp["[SEP]"]
    mask[i, :len(r) + 2] = 1
  return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
          "document": np.asarray(docs, np.int32)}


# --- the masked-LM dataset --------------------------------------------------------------

def masked_lm_split(corpus: Corpus, documents: Sequence[int], max_length: int, seed,
                    task_name: str = "mlm", copies: int = 1, **masking) -> ArrayDataset:
  """Documents of ``corpus`` as one masked-LM split: packed (``pack_documents``), then
  ``copies`` differently masked copies (``mlm_masking.mask_sequences`` with ``masking``
  options, seeds ``[*seed, copy]``). Inputs: ``input_ids`` (masked), ``attention_mask``,
  ``token_type_ids``, ``masked_lm_positions`` [N, K]; labels/mask ``task_name`` [N, K]."""
  from mtl_jax.data import mlm_masking
  packed = pack_documents(corpus, documents, max_length)
  seed = list(np.atleast_1d(seed))
  chunks = [mlm_masking.mask_sequences(
      packed["input_ids"], packed["attention_mask"], corpus.special_ids(),
      corpus.special["[MASK]"], corpus.vocab_size, seed=seed + [c],
      continuation=corpus.continuation, **masking) for c in range(copies)]
  masked = {k: np.concatenate([c[k] for c in chunks])
            for k in ("input_ids", "positions", "targets", "weights")}
  inputs = {"input_ids": masked["input_ids"],
            "attention_mask": np.tile(packed["attention_mask"], (copies, 1)),
            "token_type_ids": np.tile(packed["token_type_ids"], (copies, 1)),
            mlm_masking.POSITIONS: masked["positions"]}
  return ArrayDataset(inputs, {task_name: masked["targets"]}, {task_name: masked["weights"]})


@DATASETS.register("text_corpus")
def text_corpus(path: Optional[str] = None, tokenizer: Optional[str] = None,
                max_length: int = 128, task_name: str = "mlm", mask_rate: float = 0.15,
                max_predictions: int = 20, whole_word: bool = False, dupe_factor: int = 1,
                fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
                doc_split: str = "blank_lines", sentences: str = "punct",
                max_documents: Optional[int] = None, cache_dir: Optional[str] = None
                ) -> DataSplits:
  """A corpus as a masked-LM task ``task_name`` (kind ``masked_lm``, num_outputs = vocab).

  Documents are split by ``fractions`` (train, validation, test; seeded; test may be
  0), packed into ``max_length`` sequences and masked by mlm_masking (BERT's
  15% / 80-10-10, ``whole_word`` optional). Train holds ``dupe_factor``
  differently-masked copies; validation and test are masked once, so their
  metrics compare across runs (``masked_lm_split``).
  """
  if dupe_factor < 1:
    raise ValueError(f"text_corpus: dupe_factor must be >= 1, got {dupe_factor}")
  if len(fractions) != 3 or not (fractions[0] > 0 and fractions[1] > 0):
    raise ValueError(f"text_corpus: fractions are (train, validation, test) with train and "
                     f"validation > 0, got {tuple(fractions)}")
  corpus = load_corpus(path, tokenizer, doc_split, sentences, max_documents, cache_dir)
  parts = split_documents(corpus.num_documents, fractions, seed)
  masking = dict(rate=mask_rate, max_predictions=max_predictions, whole_word=whole_word)
  splits = [masked_lm_split(corpus, docs, max_length, [seed, i], task_name,
                            dupe_factor if i == 0 else 1, **masking) if len(docs) else None
            for i, docs in enumerate(parts)]
  return DataSplits(*splits)
