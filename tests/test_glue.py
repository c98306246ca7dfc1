"""GLUE-format TSV readers, the tokenization cache and the ranking reader, on generated files."""

import json
import os

import numpy as np
import pytest

from text_fixtures import LABELS, write_glue_task, write_tokenizer
from mtl_jax.data import glue, ranking

TASKS = ["sst2", "cola", "mrpc", "stsb", "qnli", "rte", "mnli"]


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
  return write_tokenizer(str(tmp_path_factory.mktemp("tok")))


def _oracle_ids(tok_dir, a, b, max_length):
  """Straight `tokenizers` calls, independent of our tokenize()."""
  from tokenizers import Tokenizer
  t = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
  t.enable_truncation(max_length)
  t.enable_padding(length=max_length, pad_id=0, pad_token="[PAD]")
  enc = t.encode_batch(list(zip(a, b)) if b is not None else a)
  return {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
          "token_type_ids": [e.type_ids for e in enc]}


@pytest.mark.parametrize("task", TASKS)
def test_read_every_split_in_its_real_layout(tmp_path, task):
  written = write_glue_task(str(tmp_path), task, n=7)
  d = os.path.join(str(tmp_path), glue.DIR_NAMES[task])
  for split, (a, b, y) in written.items():
    got = glue.read_split(task, d, split)
    assert got.text == a and got.pair == b, split
    if y is None:
      assert got.labels is None, split
    elif task == "stsb":
      np.testing.assert_allclose(got.labels, [float(v) for v in y], rtol=1e-6)
      assert got.labels.dtype == np.float32
    else:
      np.testing.assert_array_equal(got.labels, [LABELS[task].index(v) for v in y])
      assert got.labels.dtype == np.int32
  if task == "mnli":  # "dev" means dev_matched
    assert glue.read_split(task, d, "dev").text == written["dev_matched"][0]
  assert glue.get_task(task).num_outputs == (1 if task == "stsb" else len(LABELS[task]))


def test_tokenized_split_matches_tokenizers_and_is_cached(tmp_path, tok_dir, monkeypatch):
  written = write_glue_task(str(tmp_path), "mrpc", n=9)
  d, cache = os.path.join(str(tmp_path), "MRPC"), str(tmp_path / "cache")
  inputs, labels = glue.tokenized_split("mrpc", d, "train", tok_dir, max_length=12,
                                        cache_dir=cache)
  a, b, y = written["train"]
  for k, v in _oracle_ids(tok_dir, a, b, 12).items():
    np.testing.assert_array_equal(inputs[k], v, err_msg=k)
    assert inputs[k].dtype == np.int32
  np.testing.assert_array_equal(labels, [int(v) for v in y])
  assert inputs["token_type_ids"].any()
  assert len(os.listdir(cache)) == 1
  # A hit reads only the cache: the TSV reader must not run.
  def boom(*args, **kwargs):
    raise AssertionError("cache miss")
  monkeypatch.setattr(glue, "read_split", boom)
  again, labels2 = glue.tokenized_split("mrpc", d, "train", tok_dir, max_length=12,
                                        cache_dir=cache)
  for k in inputs:
    np.testing.assert_array_equal(again[k], inputs[k])
  np.testing.assert_array_equal(labels2, labels)
  monkeypatch.undo()
  # Another max length, an edited file or another tokenizer is another cache entry.
  glue.tokenized_split("mrpc", d, "train", tok_dir, max_length=10, cache_dir=cache)
  with open(os.path.join(d, "train.tsv"), "a") as f:
    f.write("1\t7\t8\tthe cat\tthe dog\n")
  more, _ = glue.tokenized_split("mrpc", d, "train", tok_dir, max_length=12, cache_dir=cache)
  assert len(more["input_ids"]) == 10
  other_tok = write_tokenizer(str(tmp_path / "tok2"), words=["the", "cat", "dog"])
  glue.tokenized_split("mrpc", d, "train", other_tok, max_length=12, cache_dir=cache)
  assert len(os.listdir(cache)) == 4


def test_unlabelled_test_split_is_cached_without_labels(tmp_path, tok_dir):
  write_glue_task(str(tmp_path), "rte", n=5)
  d = os.path.join(str(tmp_path), "RTE")
  for _ in range(2):  # miss, then hit
    inputs, labels = glue.tokenized_split("rte", d, "test", tok_dir, max_length=8,
                                          cache_dir=str(tmp_path / "c"))
    assert labels is None and inputs["input_ids"].shape == (5, 8)


def test_glue_errors_name_file_line_and_choices(tmp_path, tok_dir):
  write_glue_task(str(tmp_path), "rte", n=4)
  d = os.path.join(str(tmp_path), "RTE")
  with pytest.raises(KeyError, match=r"unknown GLUE task 'squad'; known tasks: \['cola', "):
    glue.read_split("squad", d, "train")
  with pytest.raises(KeyError, match="unknown split 'val'"):
    glue.read_split("rte", d, "val")
  path = os.path.join(d, "train.tsv")
  lines = open(path).read().splitlines()
  lines[3] = lines[3] + "\textra"
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  with pytest.raises(ValueError, match=rf"{path}:4: 5 fields, but the header has 4"):
    glue.read_split("rte", d, "train")
  with open(path, "w") as f:
    f.write("index\tsentence1\tlabel\n0\ta\tentailment\n")
  with pytest.raises(ValueError, match=r"train.tsv: missing columns \['sentence2'\]"):
    glue.read_split("rte", d, "train")
  with open(path, "w") as f:
    f.write("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n\n1\ta\tb\tmaybe\n")
  with pytest.raises(ValueError, match=r"train.tsv:4: label 'maybe' is not one of "
                                       r"\['entailment', 'not_entailment'\]"):
    glue.read_split("rte", d, "train")
  with pytest.raises(FileNotFoundError, match="dev.tsv"):
    glue.read_split("rte", str(tmp_path / "empty"), "dev")


def test_registered_builder_gives_dict_inputs(tmp_path, tok_dir):
  from mtl_jax.data import DATASETS, build_dataset
  assert "glue" in DATASETS
  written = write_glue_task(str(tmp_path), "stsb", n=10)
  splits = build_dataset(dict(name="glue", task="STS-B", data_dir=str(tmp_path),
                              tokenizer=tok_dir, max_length=16, holdout=0.2,
                              cache_dir=str(tmp_path / "c")))
  assert len(splits.train) == 8 and len(splits.validation) == 2 and len(splits.test) == 10
  np.testing.assert_allclose(np.sort(np.concatenate([splits.train.labels["stsb"],
                                                     splits.validation.labels["stsb"]])),
                             np.sort([float(v) for v in written["train"][2]]), rtol=1e-6)
  assert splits.test.inputs["input_ids"].dtype == np.int32


# --- ranking -------------------------------------------------------------------------

def test_ranking_tsv_and_jsonl_agree(tmp_path, tok_dir):
  rows = [("what is a cat", "a cat is an animal", 2), ("what is a cat", "the dog sat", 0),
          ("who sat", "the man sat on the mat", 1), ("what is a cat", "cat", 1)]
  tsv = tmp_path / "r.tsv"
  tsv.write_text("qid\tquery\tcandidate\trelevance\n"
                 + "".join(f"q{i}\t{q}\t{c}\t{r}\n" for i, (q, c, r) in enumerate(rows)))
  flat = tmp_path / "flat.jsonl"
  flat.write_text("".join(json.dumps(dict(query=q, candidate=c, relevance=r)) + "\n"
                          for q, c, r in rows))
  listed = tmp_path / "listed.jsonl"
  listed.write_text(json.dumps(dict(query="what is a cat", candidates=[rows[0][1], rows[1][1]],
                                    relevance=[2, 0])) + "\n"
                    + json.dumps(dict(query="who sat", candidate=rows[2][1], relevance=1)) + "\n"
                    + json.dumps(dict(query="what is a cat", candidates=["cat"], relevance=[1]))
                    + "\n")
  for path in (tsv, flat, listed):
    r = ranking.read_ranking(str(path))
    assert r.queries == ["what is a cat", "who sat"]
    np.testing.assert_array_equal(r.query_index, [0, 0, 1, 0])
    assert r.candidates == [c for _, c, _ in rows]
    np.testing.assert_array_equal(r.relevance, [2, 0, 1, 1])
  inputs = ranking.tokenize_ranking(r, tok_dir, max_length=16)
  oracle = _oracle_ids(tok_dir, [q for q, _, _ in rows], [c for _, c, _ in rows], 16)
  np.testing.assert_array_equal(inputs["input_ids"], oracle["input_ids"])


def test_ranking_errors(tmp_path):
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"query": "a", "candidate": "b", "relevance": 1}\n{"query": "a", "rel": 1}\n')
  with pytest.raises(ValueError, match=r"bad.jsonl:2: missing fields \['candidate', "
                                       r"'relevance'\]"):
    ranking.read_ranking(str(bad))
  bad.write_text('{"query": "a", "candidates": ["b", "c"], "relevance": [1]}\n')
  with pytest.raises(ValueError, match="bad.jsonl:1: 2 candidates but 1 relevance values"):
    ranking.read_ranking(str(bad))
  tsv = tmp_path / "bad.tsv"
  tsv.write_text("query\tcandidate\trelevance\na\tb\thigh\n")
  with pytest.raises(ValueError, match=r"bad.tsv:2: relevance 'high' is not a number"):
    ranking.read_ranking(str(tsv))
  tsv.write_text("query\tdoc\trelevance\na\tb\t1\n")
  with pytest.raises(ValueError, match=r"missing columns \['candidate'\]"):
    ranking.read_ranking(str(tsv))


# --- TFDS glue/* ---------------------------------------------------------------------

@pytest.mark.parametrize("task,first,second", [("mrpc", "sentence1", "sentence2"),
                                               ("mnli", "premise", "hypothesis"),
                                               ("stsb", "sentence1", "sentence2"),
                                               ("sst2", "sentence", None)])
def test_tfds_glue_through_mock_data(tmp_path, tok_dir, task, first, second):
  import tensorflow_datasets as tfds
  import tensorflow_datasets.text  # noqa: F401
  from mtl_jax.data import glue_tfds
  split = "validation_matched" if task == "mnli" else "validation"
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    src = tfds.data_source(f"glue/{task}", split=split)
    raw = [src[i] for i in range(len(src))]
    got = glue_tfds.read_split(task, split)
    inputs, labels = glue_tfds.tokenized_split(task, split, tok_dir, max_length=16,
                                               cache_dir=str(tmp_path))
  a = [str(r[first]) for r in raw]
  b = [str(r[second]) for r in raw] if second else None
  assert got.text == a and got.pair == b
  np.testing.assert_allclose(labels, [r["label"] for r in raw], rtol=1e-6)
  assert labels.dtype == (np.float32 if task == "stsb" else np.int32)
  for k, v in _oracle_ids(tok_dir, a, b, 16).items():
    np.testing.assert_array_equal(inputs[k], v, err_msg=k)
  assert len(os.listdir(tmp_path)) == 1
