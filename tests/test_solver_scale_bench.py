"""Smoke test of benchmarks/solver_scale.py: --quick prints one JSON object whose rows are all
timed (positive) and whose ratios are the ratios of those times. The targets are measured by
the full run (docs/weighting.md), never asserted on a shared CI machine."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_solver_scale_quick():
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "benchmarks", "solver_scale.py"), "--quick",
       "--repeats", "2", "--before", ""], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(proc.stdout)
  assert res["benchmark"] == "solver_scale"
  for t, rows in res["time_ms"].items():
    assert {"gramian", "mean", "weights/upgrad", "jacobian/cagrad"} <= set(rows), rows
    assert all(v > 0 for v in rows.values()), rows
    for name, ratio in res["ratio_vs_gramian"][t].items():
      assert abs(ratio - rows[f"weights/{name}"] / rows["gramian"]) < 1e-3 * ratio + 1e-4
