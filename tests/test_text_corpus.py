"""text_corpus: reading, sentences, token ids, document splits and packing (tiny tokenizer)."""

import os

import numpy as np
import pytest

from mtl_jax.data import text_corpus as tc
from text_fixtures import SPECIAL, WORDS, write_tokenizer

DOC_A = "The cat sat on the mat. The dog sat on the cat!\nIt was good."
DOC_B = "A man said what? A woman said yes."
DOC_C = "This film is very good. This movie is not bad."


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  return write_tokenizer(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "docs.txt"
  path.write_text(f"{DOC_A}\n\n{DOC_B}\n   \n\n{DOC_C}\n")
  return str(path)


def _tokenize(tok_dir, text):
  from mtl_jax.pretrained import hf_bert
  return hf_bert.load_tokenizer(tok_dir).encode(text, add_special_tokens=False).ids


def test_blank_line_documents_and_sentences(corpus_file, tok_dir):
  c = tc.load_corpus(corpus_file, tok_dir)
  assert c.num_documents == 3 and c.names[0].endswith("docs.txt#0")
  first = c.sentences(0)
  assert len(first) == 3  # "...mat." | "...cat!" | "It was good."
  assert [list(s) for s in first] == [_tokenize(tok_dir, t) for t in
                                      ("The cat sat on the mat.", "The dog sat on the cat!",
                                       "It was good.")]
  assert c.num_tokens == sum(len(_tokenize(tok_dir, d)) for d in (DOC_A, DOC_B, DOC_C))
  assert c.special["[MASK]"] == 4 and c.vocab_size == len(SPECIAL) + len(WORDS)
  assert c.continuation.sum() == 3  # ##s ##ed ##ing


def test_folder_glob_and_file_documents(tmp_path, tok_dir):
  for name, text in (("b.txt", DOC_B), ("a.txt", f"{DOC_A}\n\n{DOC_C}"), ("skip.md", DOC_C)):
    (tmp_path / name).write_text(text)
  folder = tc.load_corpus(str(tmp_path), tok_dir)
  assert folder.num_documents == 3  # a.txt has two, b.txt one; skip.md is not *.txt
  per_file = tc.load_corpus(str(tmp_path / "*.txt"), tok_dir, doc_split="file")
  assert per_file.num_documents == 2
  assert per_file.names == (str(tmp_path / "a.txt"), str(tmp_path / "b.txt"))
  lines = tc.load_corpus(str(tmp_path / "a.txt"), tok_dir, sentences="lines")
  assert len(lines.sentences(0)) == 2  # DOC_A has two lines


def test_fingerprint_is_deterministic_and_tracks_text(tmp_path, corpus_file, tok_dir):
  a, b = tc.load_corpus(corpus_file, tok_dir), tc.load_corpus(corpus_file, tok_dir)
  assert a.fingerprint == b.fingerprint and np.array_equal(a.ids, b.ids)
  other = tmp_path / "other.txt"
  other.write_text(open(corpus_file).read().replace("cat", "dog"))
  assert tc.load_corpus(str(other), tok_dir).fingerprint != a.fingerprint
  assert tc.load_corpus(corpus_file, tok_dir, sentences="lines").fingerprint != a.fingerprint


def test_errors(tmp_path, tok_dir):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    tc.load_corpus(str(tmp_path / "nope.txt"), tok_dir)
  with pytest.raises(FileNotFoundError, match="matches no file"):
    tc.load_corpus(str(tmp_path / "*.none"), tok_dir)
  with pytest.raises(FileNotFoundError, match="no \\*.txt"):
    tc.load_corpus(str(tmp_path), tok_dir)
  (tmp_path / "empty.txt").write_text("\n\n  \n")
  with pytest.raises(ValueError, match="holds no text"):
    tc.load_corpus(str(tmp_path / "empty.txt"), tok_dir)
  with pytest.raises(ValueError, match="unknown doc_split"):
    tc.load_corpus(str(tmp_path / "empty.txt"), tok_dir, doc_split="para")
  with pytest.raises(ValueError, match="cannot fill 3 splits"):
    tc.split_documents(2)
  with pytest.raises(ValueError, match="sum to 1"):
    tc.split_documents(10, (0.5, 0.2))


def test_split_documents_is_a_seeded_partition():
  parts = tc.split_documents(50, (0.8, 0.1, 0.1), seed=3)
  assert [len(p) for p in parts] == [40, 5, 5]
  assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(50))
  again = tc.split_documents(50, (0.8, 0.1, 0.1), seed=3)
  assert all(np.array_equal(x, y) for x, y in zip(parts, again))
  assert not np.array_equal(parts[1], tc.split_documents(50, (0.8, 0.1, 0.1), seed=4)[1])
  assert [len(p) for p in tc.split_documents(3, (0.98, 0.01, 0.01))] == [1, 1, 1]


def test_pack_keeps_every_token_in_order_within_documents(corpus_file, tok_dir):
  c = tc.load_corpus(corpus_file, tok_dir)
  sp = c.special
  for max_length in (5, 9, 64):
    p = tc.pack_documents(c, [2, 0], max_length)
    ids, mask = p["input_ids"], p["attention_mask"]
    assert ids.shape[1] == max_length and ids.dtype == np.int32
    assert set(np.unique(p["document"])) == {0, 2}
    for d in (2, 0):
      rows = np.flatnonzero(p["document"] == d)
      body = [ids[r, 1:mask[r].sum() - 1] for r in rows]
      assert np.array_equal(np.concatenate(body), np.concatenate(c.sentences(d)))
    n = mask.sum(1)
    assert np.all(ids[:, 0] == sp["[CLS]"]) and np.all(ids[np.arange(len(n)), n - 1] == sp["[SEP]"])
    assert np.all(ids[mask == 0] == sp["[PAD]"]) and np.all(n <= max_length)
  whole = tc.pack_documents(c, [0], 64)
  assert len(whole["input_ids"]) == 1  # short sentences share a sequence


def test_embedded_corpus_loads(tok_dir):
  from pydoc_data import topics
  c = tc.load_corpus(None, tok_dir, max_documents=5)
  assert c.names == tuple(sorted(topics.topics))[:5]
  assert c.num_sentences > 5 * 3 and c.num_tokens > 100
  assert tc.load_corpus(None, tok_dir, max_documents=5).fingerprint == c.fingerprint


def test_cache_returns_the_same_corpus_and_tracks_the_text(tmp_path, corpus_file, tok_dir):
  cache = str(tmp_path / "cache")
  fresh = tc.load_corpus(corpus_file, tok_dir, cache_dir=cache)
  files = os.listdir(cache)
  assert files == [f"corpus_{fresh.fingerprint}.npz"]
  hit = tc.load_corpus(corpus_file, tok_dir, cache_dir=cache)
  for field in ("ids", "sentence_starts", "document_starts", "continuation"):
    assert np.array_equal(getattr(hit, field), getattr(fresh, field)), field
  assert hit.names == fresh.names and hit.special == fresh.special
  path = os.path.join(cache, files[0])  # a hit reads the file, not the text
  np.savez(path, ids=fresh.ids + 1, sentence_starts=fresh.sentence_starts,
           document_starts=fresh.document_starts, names=np.array(fresh.names))
  assert np.array_equal(tc.load_corpus(corpus_file, tok_dir, cache_dir=cache).ids, fresh.ids + 1)
  edited = tmp_path / "edited.txt"
  edited.write_text(open(corpus_file).read() + "\n\nA new document.")
  assert tc.load_corpus(str(edited), tok_dir, cache_dir=cache).num_documents == 4
  assert len(os.listdir(cache)) == 2
