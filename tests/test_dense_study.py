"""experiments/dense_mtl on a tiny grid (slow file): the lr search, the single-task baseline,
hard and MTAN with two methods, one seed, two steps on 8x8 scenes; results.md holds the paired
Δm% table (the baseline row marked) and the figure is written; a rerun trains nothing."""

import importlib.util
import os

import numpy as np

from conftest import ROOT
from mtl_jax import metrics, sweep

ARGS = ["--seeds", "1", "--steps", "2", "--size", "8", "--num_train", "16",
        "--methods", "ew,upgrad", "--lrs", "0.001"]


def _study():
  spec = importlib.util.spec_from_file_location(
      "dense_mtl_study", os.path.join(ROOT, "experiments", "dense_mtl", "run.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  return study


def test_tiny_grid_report_and_rerun(tmp_path):
  study = _study()
  study.main(ARGS, study_dir=str(tmp_path))
  rows = sweep.read_results(str(tmp_path / "results.jsonl"))
  cells = sorted({r["cell"] for r in rows})
  assert cells == sorted(["single_task/ew/lr0.001", "hard/ew/lr0.001", "mtan/ew/lr0.001",
                          "hard/upgrad/lr0.001", "mtan/upgrad/lr0.001"])
  report = (tmp_path / "results.md").read_text()
  assert "| single_task | ew |" in report and "(baseline)" in report
  assert (tmp_path / "delta_m.png").stat().st_size > 0
  # The table's Δm% of hard/upgrad is metrics.delta_m of its test metrics vs single task's.
  by = {r["cell"]: r["test"] for r in rows}
  want = metrics.delta_m(by["hard/upgrad/lr0.001"], by["single_task/ew/lr0.001"], study.METRICS,
                         study.KINDS)
  line = next(ln for ln in report.splitlines() if ln.startswith("| hard | upgrad |"))
  got = float(line.split("|")[-2].split("±")[0])
  np.testing.assert_allclose(got, want, atol=0.006)
  n = len(rows)
  study.main(ARGS, study_dir=str(tmp_path))  # every cell is done: nothing new
  assert len(sweep.read_results(str(tmp_path / "results.jsonl"))) == n
