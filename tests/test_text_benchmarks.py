"""Smoke test of the text benchmarks: --quick runs print one JSON object with sane fields.

Speed targets are measured by full runs (``make bench``), never asserted here.
"""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             JAX_PLATFORMS="cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), "--quick",
                         "--repeats", "2", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout)


def test_encoder_step_time_quick():
  pytest.importorskip("transformers", reason="transformers not installed (`parity` extra)")
  out = _run("encoder_step_time.py", "--steps", "2")
  assert out["num_params"]["jax"] == out["num_params"]["torch"]  # the same model on both sides
  assert all(v > 0 for v in out["tokens_per_s"].values())
  assert out["threads"]["torch_num_threads"] >= 1 and "XLA_FLAGS" in out["threads"]
  assert out["goal_met"] == (out["ratio_torch_over_jax_time"] >= 1)


def test_tokenize_time_quick():
  out = _run("tokenize_time.py", "--examples", "200")
  assert out["config"]["examples"] == 200
  assert all(v > 0 for v in out["sequences_per_s"].values())
