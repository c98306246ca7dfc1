"""Smoke test of benchmarks/weighting_vs_torch.py: its --quick run prints one JSON
object with the expected keys, every side timed, every timing a positive finite number.

The goals (ratios against torchjd and the loop) are measured by full runs, never
asserted here: a shared CI machine is too noisy for that.
"""

import importlib.util
import math

import pytest

from conftest import run_benchmark

if not all(importlib.util.find_spec(m) for m in ("torch", "torchjd")):  # not imported here:
  pytest.skip("needs torch and torchjd (oracle extra)", allow_module_level=True)  # ~7 s

SIDES = ("mtl_jax", "torchjd_autogram", "torchjd_autojac", "loop")


def _positive(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def result():
  return run_benchmark("weighting_vs_torch.py", "--quick")


def test_keys_and_config(result):
  for key in ("benchmark", "config", "num_tasks", "params", "methods", "mtl_jax_strategy",
              "step_time_ms", "step_time_min_ms", "ratio_vs_torchjd", "ratio_vs_loop", "targets",
              "target_met", "skipped", "compile_s", "threads", "environment"):
    assert key in result, key
  assert result["benchmark"] == "weighting_vs_torch"
  assert result["config"]["quick"] is True and result["config"]["repeats"] == 1
  threads = result["threads"]
  for key in ("torch_num_threads", "torch_num_interop_threads", "XLA_FLAGS", "cpu_count"):
    assert key in threads, key
  assert threads["torch_num_threads"] >= 1 and threads["cpu_count"] >= 1


def test_same_model_on_both_sides(result):
  for t, n in result["params"].items():
    assert n["mtl_jax"] == n["torch"] > 0, (t, n)


def test_every_timing_positive(result):
  for t in map(str, result["num_tasks"]):
    times, skipped = result["step_time_ms"][t], result["skipped"][t]
    assert times and all(_positive(v) for v in times.values()), times
    assert all(_positive(v) for v in result["step_time_min_ms"][t].values())
    assert all(_positive(v) for v in result["compile_s"][t].values())
    # Every listed method is either timed or skipped with a reason; mtl_jax never skips.
    for name, m in result["methods"].items():
      assert (name in times) != bool(skipped.get(name)), (name, times.keys(), skipped)
      if m["side"] == "mtl_jax":
        assert name in times, (name, skipped)
    for side in SIDES:  # each peer path ran at least one method
      assert any(result["methods"][n]["side"] == side for n in times), (side, skipped)
    assert _positive(times["torch/ew"]) and _positive(times["mtl_jax/ew"])


def test_ratios_and_targets(result):
  for t in map(str, result["num_tasks"]):
    for agg, r in result["ratio_vs_torchjd"][t].items():
      vals = [v for k, v in r.items() if k != "best" and v is not None]
      assert all(_positive(v) for v in vals), (agg, r)
      assert r["best"] == (max(vals) if vals else None), (agg, r)
    assert all(v is None or _positive(v) for v in result["ratio_vs_loop"][t].values())
    for kind in ("vs_torchjd", "vs_loop"):
      for agg, goal in result["targets"][kind][t].items():
        assert _positive(goal["target"]), goal
        assert goal["met"] in (True, False, None), goal
        if goal["ratio"] is not None:
          assert goal["met"] == (goal["ratio"] <= goal["target"]), goal
  assert result["target_met"] in (True, False, None)
