"""A generated GLUE folder: every task's real file layout, labels that follow from the text.

``write_glue_dir(root, tasks, sizes)`` writes ``<root>/<TASK>/{train,dev,test}.tsv``
(MNLI: train, dev_matched, dev_mismatched, test_matched, test_mismatched) with
the headers and columns of the GLUE download script (CoLA train/dev without a
header), so the GLUE readers and the MT-DNN pipeline run on it exactly as on
the real download. No download: sentences are drawn from a small English word
list (every word is in the BERT uncased vocabulary), and each task's label is
a rule of its text, so a model can learn it and tasks share structure the way
GLUE's do (sentiment, word overlap, negation):

| task | rule |
|---|---|
| SST-2 | 1 if the sentence has more positive than negative adjectives |
| CoLA | 1 if the words follow "det adj noun verb det noun", 0 if shuffled |
| MRPC, QQP | 1 if sentence 2 restates sentence 1 (same nouns, synonyms, reordered) |
| STS-B | 5 x word overlap (Jaccard) of the two sentences, plus noise |
| MNLI | entailment: s2 drops s1's adjectives; contradiction: s2 negates s1; neutral: s2 adds a clause |
| RTE | entailment vs not_entailment (the other two MNLI cases) |
| QNLI | entailment if s2 mentions the noun the question s1 asks about |

A fraction ``noise`` of labels is flipped, so no task is perfectly learnable.
"""

import os
from typing import Dict, Optional, Sequence

import numpy as np

DETS = ("the", "a", "this", "that", "every")
NOUNS = ("dog", "cat", "man", "woman", "child", "car", "house", "city", "river", "teacher",
         "doctor", "student", "bird", "horse", "tree", "book", "song", "film", "garden", "ship")
VERBS = ("sees", "likes", "finds", "helps", "follows", "watches", "visits", "paints")
POS = ("good", "great", "happy", "lovely", "bright", "kind", "nice", "wonderful")
NEG = ("bad", "sad", "awful", "dark", "cruel", "poor", "terrible", "ugly")
SYN = {"good": "nice", "great": "wonderful", "happy": "glad", "bad": "poor", "sad": "unhappy",
       "sees": "watches", "likes": "loves", "finds": "discovers", "helps": "assists",
       "big": "large", "small": "little"}
ADJS = POS + NEG + ("big", "small", "old", "young")

DIRS = {"cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "qqp": "QQP", "stsb": "STS-B",
        "mnli": "MNLI", "qnli": "QNLI", "rte": "RTE"}
SPLITS = {"mnli": ("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")}
MNLI_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse",
             "sentence2_binary_parse", "sentence1_parse", "sentence2_parse", "sentence1",
             "sentence2"]
STSB_HEAD = ["index", "genre", "filename", "year", "old_index", "source1", "source2",
             "sentence1", "sentence2"]


def _base(verb):
  """'watches' -> 'watch', 'sees' -> 'see'."""
  return verb[:-2] if verb.endswith("ches") else verb[:-1]


def _clause(rng):
  """(words, nouns) of 'det adj noun verb det adj noun'."""
  n1, n2 = rng.choice(NOUNS, 2, replace=False)
  words = [rng.choice(DETS), rng.choice(ADJS), n1, rng.choice(VERBS), rng.choice(DETS),
           rng.choice(ADJS), n2]
  return words, (n1, n2)


def _sst2(rng):
  k = rng.integers(2, 5)
  adjs = list(rng.choice(POS + NEG, k))
  nouns = list(rng.choice(NOUNS, k))
  words = []
  for a, n in zip(adjs, nouns):
    words += [rng.choice(DETS), a, n, rng.choice(("and", "with", "but"))]
  score = sum(a in POS for a in adjs) - sum(a in NEG for a in adjs)
  if score == 0:  # break ties with one more adjective
    extra = rng.choice(POS + NEG)
    words += [rng.choice(DETS), extra, rng.choice(NOUNS)]
    score = 1 if extra in POS else -1
  else:
    words = words[:-1]
  return " ".join(words), None, int(score > 0)


def _cola(rng):
  words, _ = _clause(rng)
  if rng.uniform() < 0.5:
    return " ".join(words), None, 1
  while True:
    shuffled = list(rng.permutation(words))
    if shuffled != words:
      return " ".join(shuffled), None, 0


def _restate(rng, words):
  out = [SYN.get(w, w) if rng.uniform() < 0.7 else w for w in words]
  return out[4:] + ["is", "what"] + out[:4] if rng.uniform() < 0.5 else out


def _paraphrase(rng):
  words, _ = _clause(rng)
  if rng.uniform() < 0.5:
    return " ".join(words), " ".join(_restate(rng, words)), 1
  other, _ = _clause(rng)
  other[2] = words[2] if rng.uniform() < 0.5 else other[2]  # hard negatives share a noun
  return " ".join(words), " ".join(other), 0


def _stsb(rng):
  a, _ = _clause(rng)
  b, _ = _clause(rng)
  keep = rng.uniform()
  b = [x if rng.uniform() < keep else y for x, y in zip(a, b)]
  sa, sb = set(a), set(b)
  score = float(np.clip(5.0 * len(sa & sb) / len(sa | sb) + rng.normal(0, 0.3), 0, 5))
  return " ".join(a), " ".join(b), score


def _nli(rng):
  """(s1, s2, 'entailment' | 'neutral' | 'contradiction')."""
  words, (n1, n2) = _clause(rng)
  kind = rng.choice(("entailment", "neutral", "contradiction"))
  if kind == "entailment":
    s2 = [words[0], n1, words[3], words[4], n2]           # drops the adjectives
  elif kind == "contradiction":
    s2 = [words[0], n1, "does", "not", _base(words[3]), words[4], n2]
  else:
    other, _ = _clause(rng)
    s2 = [words[0], n1, words[3], words[4], n2, "and"] + other
  return " ".join(words), " ".join(s2), kind


def _qnli(rng):
  words, (n1, n2) = _clause(rng)
  asked = n1 if rng.uniform() < 0.5 else n2
  question = ["what", "does", "the", asked, _base(rng.choice(VERBS)), "?"]
  if rng.uniform() < 0.5:
    return " ".join(question), " ".join(words), "entailment"
  other, _ = _clause(rng)
  while asked in other:
    other, _ = _clause(rng)
  return " ".join(question), " ".join(other), "not_entailment"


def _example(task, rng):
  if task == "sst2":
    return _sst2(rng)
  if task == "cola":
    return _cola(rng)
  if task in ("mrpc", "qqp"):
    return _paraphrase(rng)
  if task == "stsb":
    return _stsb(rng)
  if task == "qnli":
    return _qnli(rng)
  a, b, kind = _nli(rng)
  if task == "rte":
    return a, b, "entailment" if kind == "entailment" else "not_entailment"
  return a, b, kind


def _flip(task, label, rng):
  if task == "stsb":
    return label
  if task == "mnli":
    return rng.choice([x for x in ("entailment", "neutral", "contradiction") if x != label])
  if task in ("qnli", "rte"):
    return "not_entailment" if label == "entailment" else "entailment"
  return 1 - label


def _rows(task, split, examples):
  """(header or None, rows) in the task's real layout."""
  test = split.startswith("test")
  if task == "sst2":
    return (["index", "sentence"], [(i, a) for i, (a, _, _) in enumerate(examples)]) if test \
        else (["sentence", "label"], [(a, y) for a, _, y in examples])
  if task == "cola":
    if test:
      return ["index", "sentence"], [(i, a) for i, (a, _, _) in enumerate(examples)]
    return None, [("gj04", y, "" if y else "*", a) for a, _, y in examples]
  if task == "mrpc":
    head = ["index" if test else "Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    return head, [(i if test else y, 1000 + i, 2000 + i, a, b)
                  for i, (a, b, y) in enumerate(examples)]
  if task == "qqp":
    if test:
      return ["id", "question1", "question2"], [(i, a, b) for i, (a, b, _) in enumerate(examples)]
    return (["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
            [(i, 2 * i, 2 * i + 1, a, b, y) for i, (a, b, y) in enumerate(examples)])
  if task == "stsb":
    return STSB_HEAD + ([] if test else ["score"]), [
        (i, "main-captions", "MSRvid", "2012test", i, "none", "none", a, b)
        + (() if test else (f"{y:.3f}",)) for i, (a, b, y) in enumerate(examples)]
  if task in ("qnli", "rte"):
    head = ["index", "question", "sentence"] if task == "qnli" else ["index", "sentence1",
                                                                      "sentence2"]
    return head + ([] if test else ["label"]), [(i, a, b) + (() if test else (y,))
                                                for i, (a, b, y) in enumerate(examples)]
  extra = [] if test else (["label1", "gold_label"] if split == "train" else
                           ["label1", "label2", "label3", "label4", "label5", "gold_label"])
  rows = [[i, 31193 + i, f"{31193 + i}n", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)",
           a, b] + [y] * len(extra) for i, (a, b, y) in enumerate(examples)]
  return MNLI_HEAD + extra, rows


def write_glue_dir(root: str, tasks: Sequence[str] = tuple(DIRS),
                   sizes: Optional[Dict[str, int]] = None, dev_size: int = 200,
                   test_size: int = 20, noise: float = 0.05, seed: int = 0) -> str:
  """Writes a GLUE folder at ``root``; ``sizes`` {task: train examples} (default 500)."""
  sizes = dict(sizes or {})
  for t_index, task in enumerate(tasks):
    if task not in DIRS:
      raise KeyError(f"glue_synthetic: unknown task {task!r}; known: {sorted(DIRS)}")
    d = os.path.join(root, DIRS[task])
    os.makedirs(d, exist_ok=True)
    for s_index, split in enumerate(SPLITS.get(task, ("train", "dev", "test"))):
      rng = np.random.default_rng([seed, t_index, s_index])
      n = sizes.get(task, 500) if split == "train" else (
          test_size if split.startswith("test") else dev_size)
      examples = []
      for _ in range(n):
        a, b, y = _example(task, rng)
        if rng.uniform() < noise:
          y = _flip(task, y, rng)
        examples.append((a, b, y))
      header, rows = _rows(task, split, examples)
      with open(os.path.join(d, split + ".tsv"), "w", encoding="utf-8", newline="") as f:
        if header is not None:
          f.write("\t".join(header) + "\n")
        for r in rows:
          f.write("\t".join(str(x) for x in r) + "\n")
  return root
