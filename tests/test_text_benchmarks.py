"""Smoke test of the text benchmarks: --quick runs print one JSON object with sane fields.

Speed targets are measured by full runs (``make bench``), never asserted here.
"""

import pytest

from conftest import run_benchmark


def _run(script, *args):
  return run_benchmark(script, "--quick", "--repeats", "2", *args, timeout=240)


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
