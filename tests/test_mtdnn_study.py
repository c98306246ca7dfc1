"""experiments/mtdnn on a tiny fixture: the grid runs, picks on validation, writes its table."""

import importlib.util
import json
import os

from mtl_jax import sweep
from test_mtdnn_pipeline import WORDS
from text_fixtures import write_bert_dir, write_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_study_grid_and_report(tmp_path, monkeypatch):
  spec = importlib.util.spec_from_file_location(
      "mtdnn_study", os.path.join(ROOT, "experiments", "mtdnn", "run.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  encoder = write_bert_dir(str(tmp_path / "bert"), vocab_size=5 + len(WORDS))
  write_tokenizer(encoder, WORDS)
  for name, value in dict(HERE=str(tmp_path), TASKS=("mnli", "rte"), FINETUNE=("rte",),
                          SIZES={"mnli": 40, "rte": 20}, DEV_SIZE=12, LRS=(1e-4,),
                          STAGE2_STEPS=4, FINETUNE_STEPS=2, BATCH=4, NUM_BLOCKS=1,
                          MAX_LENGTH=16).items():
    monkeypatch.setattr(study, name, value)
  study.main(["--seeds", "1", "--encoder", encoder])
  rows = sweep.read_results(str(tmp_path / "results.jsonl"))
  assert sorted(r["cell"] for r in rows) == sorted(study.cells())
  s3 = [r for r in rows if r["cell"].startswith("stage3_")]
  cfg = json.load(open(tmp_path / "runs" / s3[0]["cell"] / "seed_0" / "config.json"))
  assert cfg["init_from"]["workdir"] == str(tmp_path / "runs" / "stage2_mtl" / "seed_0")
  assert cfg["init_from"]["heads"] == {"rte": "rte"}
  assert all("test" in r and "validation" in r for r in rows)  # dev reported, holdout picks
  md = open(tmp_path / "results.md").read()
  assert "| rte (20) |" in md and "Validation (held-out train) means per learning rate" in md
  # Rerunning skips every finished (cell, seed).
  study.main(["--seeds", "1", "--encoder", encoder])
  assert len(sweep.read_results(str(tmp_path / "results.jsonl"))) == len(rows)
