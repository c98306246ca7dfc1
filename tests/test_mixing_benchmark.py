"""benchmarks/mixing_input.py --quick runs and reports consistent numbers."""

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_mixing_input_benchmark_quick():
  env = dict(os.environ, PYTHONPATH=ROOT)
  out = subprocess.run([sys.executable, "benchmarks/mixing_input.py", "--quick"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  res = json.loads(out.stdout)
  assert res["benchmark"] == "mixing_input"
  for mode in ("mixed",):
    r = res["input"][mode]
    assert r["input_examples_per_s"] > 0 and r["step_consumes_examples_per_s"] > 0
    assert abs(r["input_over_consumption"] - r["input_examples_per_s"]
               / r["step_consumes_examples_per_s"]) < 0.05 * r["input_over_consumption"] + 0.01
    assert set(r["epochs_seen"]) == {"a", "b", "c", "d"}
  for r in res["masked_format"].values():  # both formats compute the same loss (checked inside)
    assert abs(r["loss_masked"] - r["loss_labelled"]) <= 1e-4 * abs(r["loss_masked"])
