"""ERNIE 2.0's self-supervised task builders: values on a tiny hand-written corpus, bad input."""

import itertools

import numpy as np
import pytest

from mtl_jax.data import build_dataset
from mtl_jax.data import ernie_tasks as et
from mtl_jax.data import text_corpus as tc
from text_fixtures import write_tokenizer

# Three documents; words from text_fixtures.WORDS so every word is one token.
DOC_A = "The cat sat on the mat. A Dog sat. The man said yes. It was good."
DOC_B = "A woman said no. The film was bad. What a movie."
DOC_C = "Good question. An answer."


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  return write_tokenizer(str(tmp_path_factory.mktemp("tok")))


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "docs.txt"
  path.write_text(f"{DOC_A}\n\n{DOC_B}\n\n{DOC_C}\n")
  return str(path)


@pytest.fixture(scope="module")
def corpus(corpus_file, tok_dir):
  return tc.load_corpus(corpus_file, tok_dir)


def _words(tok_dir, text):
  from mtl_jax.pretrained import hf_bert
  return hf_bert.load_tokenizer(tok_dir).encode(text, add_special_tokens=False).ids


def test_capitalization_labels_words_that_start_with_a_capital(corpus_file, tok_dir, corpus):
  flags = et.capitalization_flags(corpus_file, tok_dir)
  assert len(flags) == corpus.num_tokens
  inputs, y, m = et.capitalization_task(corpus, flags, [0], max_length=64)
  n = inputs["attention_mask"][0].sum()
  # Oracle: the words of DOC_A in order, capitalised or not (punctuation is lower).
  words = DOC_A.replace(".", " .").split()
  assert list(inputs["input_ids"][0, 1:n - 1]) == _words(tok_dir, DOC_A)
  np.testing.assert_array_equal(y[0, 1:n - 1], [w[0].isupper() for w in words])
  assert m[0, 1:n - 1].all() and not m[0, 0] and not m[0, n - 1:].any()
  # Short rows: the labels follow the tokens across rows.
  inputs, y, m = et.capitalization_task(corpus, flags, [0], max_length=6)
  got = np.concatenate([y[r, 1:inputs["attention_mask"][r].sum() - 1] for r in range(len(y))])
  np.testing.assert_array_equal(got, [w[0].isupper() for w in words])


def test_token_document_relation_against_a_set_oracle(corpus, tok_dir):
  inputs, y, m = et.token_document_task(corpus, [0, 1, 2], max_length=9)
  # Oracle: rebuild each document's segments from the packed rows, by the corpus documents.
  packed = tc.pack_documents(corpus, [0, 1, 2], 9)
  docs = packed["document"]
  multi = [d for d in (0, 1, 2) if (docs == d).sum() > 1]
  keep = np.isin(docs, multi)
  assert len(y) == keep.sum()  # one-segment documents are left out
  rows = np.flatnonzero(keep)
  for i, r in enumerate(rows):
    n = packed["attention_mask"][r].sum()
    seg = packed["input_ids"][r, 1:n - 1]
    others = set(np.concatenate([packed["input_ids"][o, 1:packed["attention_mask"][o].sum() - 1]
                                 for o in np.flatnonzero(docs == docs[r]) if o != r]))
    np.testing.assert_array_equal(y[i, 1:n - 1], [v in others for v in seg])
    assert m[i, 1:n - 1].all() and not m[i, 0] and not m[i, n - 1:].any()
  assert 0 < y[m].mean() < 1  # both classes occur


def test_sentence_reordering_permutation_classes(corpus):
  k = 3
  inputs, y, m = et.reorder_task(corpus, [0, 1, 2], max_length=32, k=k, seed=0)
  perms = list(itertools.permutations(range(k)))
  assert len(perms) == 6
  # DOC_A has 4 sentences -> one window; DOC_B 3 -> one; DOC_C 2 -> none.
  assert len(y) == 2 and m.sum() == 2 and m[:, 0].all()
  sep = corpus.special["[SEP]"]
  for i, (d, w) in enumerate([(0, 0), (1, 0)]):
    c = y[i, 0]
    ids = inputs["input_ids"][i, 1:inputs["attention_mask"][i].sum()]
    segs = np.split(ids, np.flatnonzero(ids == sep) + 1)[:-1]
    shown = [list(s[:-1]) for s in segs]
    sents = corpus.sentences(d)
    assert shown == [list(sents[w + j]) for j in perms[c]]
  classes = et.reorder_task(corpus, [0, 1] * 40, 32, k, seed=1)[1][:, 0]
  assert set(classes) == set(range(6))  # every class is drawn


def test_sentence_distance_classes_follow_the_documents(corpus):
  inputs, y, m = et.distance_task(corpus, [0, 1, 2], max_length=32, seed=0)
  assert len(y) == corpus.num_sentences and m.sum() == len(y) and m[:, 0].all()
  sep = corpus.special["[SEP]"]
  where = {}  # sentence ids -> (document, index)
  for d in range(corpus.num_documents):
    for j, s in enumerate(corpus.sentences(d)):
      where.setdefault(tuple(s), []).append((d, j))
  counts = np.bincount(y[:, 0], minlength=3)
  assert (counts > 0).all()
  for i in range(len(y)):
    n = inputs["attention_mask"][i].sum()
    ids = inputs["input_ids"][i, 1:n]
    cut = np.flatnonzero(ids == sep)
    a, b = tuple(ids[:cut[0]]), tuple(ids[cut[0] + 1:cut[1]])
    tt = inputs["token_type_ids"][i, :n]
    assert (tt[:cut[0] + 2] == 0).all() and (tt[cut[0] + 2:] == 1).all()
    pairs = [(p, q) for p in where[a] for q in where[b]]
    c = y[i, 0]
    if c == 0:
      assert any(p[0] == q[0] and q[1] == p[1] + 1 for p, q in pairs)
    elif c == 1:
      assert any(p[0] == q[0] and abs(q[1] - p[1]) >= 2 for p, q in pairs)
    else:
      assert any(p[0] != q[0] for p, q in pairs)


def test_registered_datasets_share_one_input_structure(corpus_file, tok_dir):
  common = dict(path=corpus_file, tokenizer=tok_dir, max_length=16, max_predictions=4,
                split=(0.34, 0.33, 0.33))
  shapes = {}
  for name, task, classes in (("ernie_capitalization", "capitalization", 2),
                              ("ernie_distance", "distance", 3)):
    d = build_dataset(dict(name=name, **common))
    assert list(d.train.labels) == [task]
    shapes[name] = {k: (v.shape[1:], v.dtype) for k, v in d.train.inputs.items()}
    assert d.train.labels[task].max() < classes
    assert not d.train.inputs[et.POSITIONS].any()
  assert shapes["ernie_capitalization"] == shapes["ernie_distance"]
  assert set(shapes["ernie_distance"]) == {"input_ids", "attention_mask", "token_type_ids",
                                           et.POSITIONS}


def test_errors(tmp_path, corpus_file, tok_dir):
  short = tmp_path / "short.txt"
  short.write_text("The cat sat. A dog sat.\n\nThe man said yes.\n\nIt was good.\n")
  with pytest.raises(ValueError, match="no document of the corpus is long enough for sentence "
                                       "reordering with segments=3: the longest has 2"):
    build_dataset(dict(name="ernie_reorder", path=str(short), tokenizer=tok_dir))
  with pytest.raises(ValueError, match="segments must be >= 2"):
    build_dataset(dict(name="ernie_reorder", path=corpus_file, tokenizer=tok_dir, segments=1))
  # DOC_A alone can make a window; a split holding only DOC_C (2 sentences) cannot.
  with pytest.raises(ValueError, match="split .* makes no example"):
    build_dataset(dict(name="ernie_reorder", path=corpus_file, tokenizer=tok_dir,
                       split=(0.34, 0.33, 0.33), split_seed=0))


@pytest.mark.parametrize("max_span", [1, 3])
def test_word_and_phrase_masking(corpus, max_span):
  packed = tc.pack_documents(corpus, [0, 1, 2], 32)
  ids, pos, y, w = et.span_mask(packed["input_ids"], packed["attention_mask"], corpus, seed=0,
                                rate=0.3, max_predictions=8, max_span=max_span)
  special = corpus.special_ids()
  runs = []
  for r in range(len(ids)):
    cand = ((packed["attention_mask"][r] > 0) & ~np.isin(packed["input_ids"][r], special)).sum()
    p = pos[r, w[r]]
    assert len(p) == min(8, max(1, round(0.3 * cand)))  # the budget, filled exactly (1-token words)
    assert np.all(np.diff(p) > 0) and not np.isin(packed["input_ids"][r, p], special).any()
    np.testing.assert_array_equal(y[r, w[r]], packed["input_ids"][r, p])  # targets = originals
    untouched = np.setdiff1d(np.arange(ids.shape[1]), p)
    np.testing.assert_array_equal(ids[r, untouched], packed["input_ids"][r, untouched])
    runs += [len(g) for g in np.split(p, np.flatnonzero(np.diff(p) > 1) + 1)]
  # Phrases make contiguous runs longer than whole-word masking's.
  if max_span == 1:
    assert np.mean(runs) < 1.6
  else:
    assert np.mean(runs) > 1.6
  # 80/10/10 over many rows: [MASK] ~ 0.8 of the selected tokens.
  big = np.tile(packed["input_ids"], (60, 1)), np.tile(packed["attention_mask"], (60, 1))
  ids, pos, y, w = et.span_mask(*big, corpus, seed=1, rate=0.3, max_predictions=8,
                                max_span=max_span)
  sel = ids[np.arange(len(ids))[:, None].repeat(8, 1)[w], pos[w]]
  share = np.mean(sel == corpus.special["[MASK]"])
  assert abs(share - 0.8) < 0.05, share


def test_masking_dataset_format(corpus_file, tok_dir):
  d = build_dataset(dict(name="ernie_masking", path=corpus_file, tokenizer=tok_dir,
                         max_length=16, max_predictions=4, mode="phrase",
                         split=(0.34, 0.33, 0.33)))
  x = d.train.inputs
  assert x[et.POSITIONS].shape == (len(d.train), 4) and d.train.labels["masking"].shape[1] == 4
  assert d.train.mask["masking"].any()
  with pytest.raises(ValueError, match="unknown mode 'entity'"):
    build_dataset(dict(name="ernie_masking", path=corpus_file, tokenizer=tok_dir, mode="entity"))


def test_own_pairs_through_the_glue_pair_format(tmp_path, tok_dir):
  from text_fixtures import write_glue_task
  write_glue_task(str(tmp_path / "glue"), "mnli", n=6)
  d = build_dataset(dict(name="ernie_pairs", task="mnli", data_dir=str(tmp_path / "glue"),
                         tokenizer=tok_dir, max_length=16, max_predictions=4,
                         task_name="relevance"))
  plain = build_dataset(dict(name="glue", task="mnli", data_dir=str(tmp_path / "glue"),
                             tokenizer=tok_dir, max_length=16))
  y, m = d.train.labels["relevance"], d.train.mask["relevance"]
  assert y.shape == (6, 16) and m[:, 0].all() and not m[:, 1:].any()
  np.testing.assert_array_equal(y[:, 0], plain.train.labels["mnli"])
  np.testing.assert_array_equal(d.train.inputs["input_ids"], plain.train.inputs["input_ids"])
  assert d.train.inputs[et.POSITIONS].shape == (6, 4)
