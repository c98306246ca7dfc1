"""Ranking data: (query, candidate, relevance) rows from TSV or JSONL.

TSV: a header with ``query``, ``candidate`` and ``relevance`` columns (others
ignored), one candidate per row. JSONL: one object per line, either
``{"query", "candidate", "relevance"}`` or a query with its list of
``candidates`` and a ``relevance`` list of the same length. Rows of one query
are grouped by ``query_index`` (queries in order of first appearance), so a
listwise loss or a per-query metric (MRR, nDCG) can segment on it. Inputs
tokenize as (query, candidate) sentence pairs.
"""

import dataclasses
import json
import os
from typing import Dict, List

import numpy as np

from mtl_jax.data.glue import read_tsv

FIELDS = ("query", "candidate", "relevance")


@dataclasses.dataclass
class Ranking:
  queries: List[str]          # distinct queries, first-appearance order
  query_index: np.ndarray     # int32 [N]: row -> index into ``queries``
  candidates: List[str]       # [N]
  relevance: np.ndarray       # float32 [N]

  def __len__(self):
    return len(self.candidates)


def _number(value, where: str) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{where}: relevance {value!r} is not a number") from None


def read_ranking(path: str) -> Ranking:
  """Reads a .tsv or .jsonl ranking file (see the module docstring)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"ranking file {path} does not exist")
  rows = []  # (query, candidate, relevance)
  if path.endswith(".tsv"):
    header, data, lines = read_tsv(path)
    missing = [f for f in FIELDS if f not in header]
    if missing:
      raise ValueError(f"{path}: missing columns {missing}; the header has {header}")
    q, c, r = (header.index(f) for f in FIELDS)
    rows = [(row[q], row[c], _number(row[r], f"{path}:{line}"))
            for row, line in zip(data, lines)]
  elif path.endswith(".jsonl"):
    with open(path, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        where = f"{path}:{line_no}"
        try:
          obj = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{where}: not valid JSON ({e})") from None
        if "candidates" in obj:
          missing = [k for k in ("query", "candidates", "relevance") if k not in obj]
          if missing:
            raise ValueError(f"{where}: missing fields {missing}; has {sorted(obj)}")
          if len(obj["candidates"]) != len(obj["relevance"]):
            raise ValueError(f"{where}: {len(obj['candidates'])} candidates but "
                             f"{len(obj['relevance'])} relevance values")
          rows += [(obj["query"], c, _number(r, where))
                   for c, r in zip(obj["candidates"], obj["relevance"])]
        else:
          missing = [k for k in FIELDS if k not in obj]
          if missing:
            raise ValueError(f"{where}: missing fields {missing}; has {sorted(obj)} (give "
                             "query/candidate/relevance or query/candidates/relevance lists)")
          rows.append((obj["query"], obj["candidate"], _number(obj["relevance"], where)))
  else:
    raise ValueError(f"{path}: ranking files are .tsv or .jsonl")
  if not rows:
    raise ValueError(f"{path}: no ranking rows")
  index: Dict[str, int] = {}
  qi = np.array([index.setdefault(q, len(index)) for q, _, _ in rows], np.int32)
  return Ranking(list(index), qi, [c for _, c, _ in rows],
                 np.array([r for _, _, r in rows], np.float32))


def tokenize_ranking(ranking: Ranking, tokenizer_dir: str, max_length: int = 128):
  """(query, candidate) pair inputs: int32 [N, max_length] dict."""
  from mtl_jax.pretrained import hf_bert
  tok = hf_bert.load_tokenizer(tokenizer_dir)
  queries = [ranking.queries[i] for i in ranking.query_index]
  return hf_bert.tokenize(tok, queries, ranking.candidates, max_length=max_length)
