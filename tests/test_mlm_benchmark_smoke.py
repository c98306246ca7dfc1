"""Smoke test of benchmarks/mlm_step_time.py: ``--smoke`` prints one JSON object with the
expected keys and positive times (the ratios themselves are measured by full runs)."""

import math

from conftest import run_benchmark


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_mlm_step_time_smoke_json():
  res = run_benchmark("mlm_step_time.py", "--smoke", "--steps", "1", timeout=240)
  assert res["benchmark"] == "mlm_step_time"
  assert set(res["step_time_ms"]) == {"jax", "jax_full", "torch"}
  assert all(_positive(v) for v in res["step_time_ms"].values()), res["step_time_ms"]
  assert all(_positive(v) for v in res["tokens_per_s"].values())
  assert _positive(res["ratio_torch_over_jax_time"]) and _positive(res["ratio_full_over_gather_time"])
  assert isinstance(res["goal_met"], bool)
  assert res["config"]["masked_tokens"] > 0
  # Same model on both sides (the tied decoder is counted once by torch as well).
  assert res["num_params"]["jax"] == res["num_params"]["torch"] == res["num_params"]["jax_full"]
  assert all(math.isfinite(v) for v in res["final_loss"].values())
