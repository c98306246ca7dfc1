"""Studies keep other data sources apart: many_tasks --school writes its own files."""

import importlib.util
import json
import os
import sys

import numpy as np
import scipy.io

from mtl_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _school_mat(path, seed):
  rng = np.random.default_rng(seed)
  xs, ys = np.empty((1, 139), dtype=object), np.empty((1, 139), dtype=object)
  for t in range(139):
    n = int(rng.integers(6, 10))
    xs[0, t] = np.c_[rng.normal(size=(n, 27)), np.ones(n)]
    ys[0, t] = rng.normal(size=(n, 1))
  scipy.io.savemat(path, {"X": xs, "Y": ys})


def test_many_tasks_school_writes_its_own_keyed_results(tmp_path, monkeypatch):
  spec = importlib.util.spec_from_file_location(
      "many_tasks_study", os.path.join(ROOT, "experiments", "many_tasks", "run.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  monkeypatch.setattr(study, "HERE", str(tmp_path))
  mat = str(tmp_path / "school.mat")
  _school_mat(mat, 0)
  monkeypatch.setattr(sys, "argv", ["run.py", "--school", mat, "--splits", "1", "--cells",
                                    "pooled"])
  study.main()
  sha = sweep.file_sha256(mat, 8)
  names = sorted(os.listdir(tmp_path))
  assert f"results_school-{sha}.jsonl" in names and f"results_school-{sha}.md" in names
  assert "results.jsonl" not in names and "results.md" not in names  # generator's files untouched
  rows = [json.loads(line) for line in open(tmp_path / f"results_school-{sha}.jsonl")]
  assert [r["cell"] for r in rows] == ["pooled"]
  assert sweep.file_sha256(mat) in rows[0]["provenance"]["setup"]["data"]
  md = open(tmp_path / f"results_school-{sha}.md").read()
  assert "School file `school.mat`" in md and "Provenance: 1 rows" in md
  _school_mat(mat, 1)  # other bytes at the same path: another results file
  study.main()
  assert f"results_school-{sweep.file_sha256(mat, 8)}.jsonl" in os.listdir(tmp_path)
