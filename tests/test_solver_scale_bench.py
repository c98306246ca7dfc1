"""Smoke test of benchmarks/solver_scale.py: --quick prints one JSON object whose rows are all
timed (positive) and whose ratios are the ratios of those times. The targets are measured by
the full run (docs/weighting.md), never asserted on a shared CI machine."""

from conftest import run_benchmark


def test_solver_scale_quick():
  res = run_benchmark("solver_scale.py", "--quick", "--repeats", "2", "--before", "")
  assert res["benchmark"] == "solver_scale"
  for t, rows in res["time_ms"].items():
    assert {"gramian", "mean", "weights/upgrad", "jacobian/cagrad"} <= set(rows), rows
    assert all(v > 0 for v in rows.values()), rows
    for name, ratio in res["ratio_vs_gramian"][t].items():
      assert abs(ratio - rows[f"weights/{name}"] / rows["gramian"]) < 1e-3 * ratio + 1e-4
