"""capacity and mnist1d_baselines: their reports pair methods by seed and read keyed rows."""

import importlib.util
import os

from mtl_jax import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _study(name, tmp_path, monkeypatch):
  spec = importlib.util.spec_from_file_location(
      f"{name}_study", os.path.join(ROOT, "experiments", name, "run.py"))
  study = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(study)
  monkeypatch.setattr(study, "HERE", str(tmp_path))
  return study


def _row(study, cell, seed, metrics):
  prov, _ = sweep.provenance(study.make_config(cell, seed), seed, study.SETUP, "abc")
  return {"cell": cell, "seed": seed, "seconds": 1.0, **metrics, "provenance": prov}


def test_capacity_difference_is_paired_by_seed(tmp_path, monkeypatch):
  study = _study("capacity", tmp_path, monkeypatch)
  rows = []
  for cell in study.CELLS:
    for s in range(3):
      # Large between-seed spread, a constant MTL − STL gap of 0.01 in every seed.
      v = 0.05 + 0.1 * s + (0.01 if cell.startswith("mtl") else 0.0)
      split = {t: {"mse": v} for t in study.TASKS}
      rows.append(_row(study, cell, s, {"validation": split, "test": split}))
  study.write_report(rows, 2000)
  md = open(tmp_path / "results.md").read()
  assert "| 2 | 0.160 ± 0.058 | 0.150 ± 0.058 | +0.010 ± 0.000 | +0.010 ± 0.000 | 3 |" in md
  assert "Provenance: 36 rows" in md and os.path.exists(tmp_path / "capacity.png")


def test_mnist1d_baselines_shuffled_minus_original_is_paired(tmp_path, monkeypatch):
  study = _study("mnist1d_baselines", tmp_path, monkeypatch)
  rows = []
  for cell in study.CELLS:
    for s in range(3):
      acc = (0.5 if cell.endswith("shuffled") else 0.9) + 0.05 * s
      split = {"digit": {"accuracy": acc}}
      rows.append(_row(study, cell, s, {"validation": split, "test": split}))
  study.write_report(rows)
  md = open(tmp_path / "results.md").read()
  assert "| cnn | -40.0 ± 0.0 | 3 | -38 |" in md
  assert "Provenance: 18 rows" in md and os.path.exists(tmp_path / "accuracy.png")
