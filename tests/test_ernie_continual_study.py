"""experiments/ernie_continual on a tiny grid: pretraining (ERNIE schedule + task embedding),
downstream fine-tuning, the report; forgetting and the paired table from known rows."""

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("tokenizers")


@pytest.fixture
def study(tmp_path, monkeypatch):
  spec = importlib.util.spec_from_file_location(
      "ernie_continual_study", os.path.join(ROOT, "experiments", "ernie_continual", "run.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  monkeypatch.setattr(mod, "HERE", str(tmp_path))
  for k, v in dict(max_documents=14, hidden=16, intermediate=32, max_length=24,
                   max_predictions=4, batch=8, ft_batch=8, ft_lrs=(1e-3,),
                   downstream=("cola",), eval_batch=64).items():
    monkeypatch.setitem(mod.P, k, v)
  yield mod
  mod.set_tasks([t[0] for t in mod.TASKS])


def test_tiny_grid_end_to_end(study, tmp_path):
  study.main(["--seeds", "2", "--steps", "4", "--ft_steps", "2", "--tasks", "word_mask,caps",
              "--cells", "ernie+emb"])
  rows = [json.loads(line) for line in open(tmp_path / "results.jsonl")]
  pre = [r for r in rows if r["phase"] == "pretrain"]
  ft = [r for r in rows if r["phase"] == "finetune"]
  assert [(r["cell"], r["seed"]) for r in pre] == [("ernie+emb", 0), ("ernie+emb", 1)]
  # Stage ends 2 and 4: each task measured at both (word_mask from stage 0, caps from 1).
  assert sorted(pre[0]["curves"]["word_mask"]) == ["2", "4"]
  assert set(pre[0]["test"]) == {"word_mask", "caps"}
  assert {(r["encoder"], r["seed"]) for r in ft} == {(e, s) for e in ("scratch", "ernie+emb")
                                                     for s in (0, 1)}
  md = open(tmp_path / "results.md").read()
  assert "| ernie+emb |" in md and "## Forgetting" in md and "## Downstream" in md
  assert os.path.exists(tmp_path / "curves.png")
  # --report_only regenerates the same page from the rows.
  study.main(["--report_only"])
  assert open(tmp_path / "results.md").read() == md


def test_forgetting_and_report_from_known_rows(study, tmp_path):
  study.set_tasks(["word_mask", "caps", "reorder"])
  study.P["steps"] = 30  # stage ends 10, 20, 30
  curves = {"word_mask": {"10": 50.0, "20": 45.0, "30": 40.0},
            "caps": {"10": 90.0, "20": 93.0, "30": 92.0}, "reorder": {"30": 20.0}}
  row = {"curves": curves}
  assert study.forgetting(row) == {"word_mask": 10.0, "caps": 1.0}
  rows = []
  for cell in ("mlm", "ernie"):
    for s in (0, 1):
      c = {"word_mask": curves["word_mask"]} if cell == "mlm" else curves
      rows.append({"cell": cell, "seed": s, "phase": "pretrain", "seconds": 1.0, "curves": c,
                   "test": {t: {"accuracy": 0.5} for t in c}})
      for e in ("scratch", cell):
        if e == "scratch" and cell == "ernie":
          continue
        # A constant +2 points for ernie over mlm in every seed, big spread across seeds.
        acc = 0.6 + 0.1 * s + (0.02 if e == "ernie" else 0.0)
        rows.append({"phase": "finetune", "encoder": e, "task": "cola", "lr": 1e-3, "seed": s,
                     "validation": {"cola": {"accuracy": acc}},
                     "test": {"cola": {"accuracy": acc}}})
  study.write_report(rows, {"downstream_sizes": {"cola": 10}})
  md = open(tmp_path / "results.md").read()
  assert "| ernie | 10.0 ± 0.0 | 1.0 ± 0.0 | 5.5 ± 0.0 |" in md
  assert "| ernie | 67.0 ± 5.0 (0.001) | 67.0 ± 5.0 | +2.0 ± 0.0 |" in md
  np.testing.assert_allclose(study.stage_steps(), [10, 10, 10])
