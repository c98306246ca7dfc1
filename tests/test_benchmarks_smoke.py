"""Smoke test of the benchmark scripts: each runs with --quick (in the shared benchmark
process of tests/conftest.py ``run_benchmark``) and prints one JSON object with the expected
keys and positive times.

The performance targets themselves are measured by the full runs (``make bench``),
never asserted here: a shared CI machine is too noisy for that.
"""

import math

import pytest

from conftest import run_benchmark

# Script -> extra arguments (after --quick --repeats 2).
SCRIPTS = {"many_tasks_step_time": ("--steps", "1"), "frozen_trunk_step_time": ("--steps", "1"),
           "weighting_step_time": ("--steps", "1"), "cached_probe_epoch_time": (),
           "soft_vs_separate_step_time": ("--steps", "1"), "num_seeds_time": (),
           "weighting_scale": (), "sharding_step_time": ("--steps", "1")}
# Seconds per script (default 180): num_seeds_time starts two fresh training processes.
TIMEOUTS = {"num_seeds_time": 300}


@pytest.fixture(scope="module")
def outputs():
  """Each script's JSON, or the AssertionError its run raised (re-raised by its own test)."""
  results = {}
  for name, extra in SCRIPTS.items():
    try:
      results[name] = run_benchmark(f"{name}.py", "--quick", "--repeats", "2", *extra,
                                    timeout=TIMEOUTS.get(name, 180))
    except AssertionError as e:
      results[name] = e
  return results


def _parse(outputs, name):
  if isinstance(outputs[name], AssertionError):
    raise outputs[name]
  return outputs[name]


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_many_tasks_json(outputs):
  res = _parse(outputs, "many_tasks_step_time")
  for key in ("benchmark", "config", "num_tasks", "step_time_ms", "compile_s", "ratio",
              "target", "target_met"):
    assert key in res, key
  assert res["benchmark"] == "many_tasks_step_time"
  ts = [str(t) for t in res["num_tasks"]]
  assert len(ts) >= 2 and ts[0] == "1"
  assert set(res["step_time_ms"]) == set(ts) == set(res["compile_s"])
  assert all(_positive(v) for v in res["step_time_ms"].values()), res["step_time_ms"]
  assert all(_positive(v) for v in res["compile_s"].values()), res["compile_s"]
  assert f"ratio_T{ts[-1]}_over_T1" in res
  assert _positive(res["ratio"])
  assert isinstance(res["target_met"], bool)


def test_frozen_trunk_json(outputs):
  res = _parse(outputs, "frozen_trunk_step_time")
  for key in ("benchmark", "config", "step_time_ms", "compile_s", "ratio_frozen_over_full",
              "ratio", "target", "target_met"):
    assert key in res, key
  assert res["benchmark"] == "frozen_trunk_step_time"
  assert set(res["step_time_ms"]) == {"full", "frozen"} == set(res["compile_s"])
  assert all(_positive(v) for v in res["step_time_ms"].values()), res["step_time_ms"]
  assert all(_positive(v) for v in res["compile_s"].values()), res["compile_s"]
  assert _positive(res["ratio_frozen_over_full"])
  assert isinstance(res["target_met"], bool)
  # Freezing really leaves only the heads trainable.
  cost = res["xla_cost"]
  assert cost["frozen"]["trainable_params"] < cost["full"]["trainable_params"]


def test_weighting_json(outputs):
  res = _parse(outputs, "weighting_step_time")
  for key in ("benchmark", "config", "num_tasks", "methods", "step_time_ms", "ratio_vs_ew",
              "ratio_vs_loop", "memory_bytes", "targets", "target_met", "skipped", "compile_s"):
    assert key in res, key
  assert res["benchmark"] == "weighting_step_time"
  t = str(res["num_tasks"][0])
  times, skipped = res["step_time_ms"][t], res["skipped"][t]
  for name in ("ew", "jacobian/mgda", "loop/mgda"):
    assert _positive(times[name]), (name, times)
  # Representation mode needs the model's shared features: timed, or null with a reason.
  rep = times["representation/mgda"]
  assert _positive(rep) or (rep is None and skipped["representation/mgda"]), (rep, skipped)
  assert _positive(res["ratio_vs_loop"][t]["jacobian/mgda"])
  assert all(_positive(v) for n, v in res["ratio_vs_ew"][t].items() if n not in skipped)
  # The Jacobian path holds a T x P matrix that the weighted sum never builds.
  mem = res["memory_bytes"][t]
  assert mem["jacobian/mgda"]["temp"] > mem["ew"]["temp"] > 0, mem
  for target in res["targets"].values():
    assert target["met"] in (True, False, None), target
  assert res["target_met"] in (True, False, None)


def test_cached_probe_json(outputs):
  res = _parse(outputs, "cached_probe_epoch_time")
  for key in ("benchmark", "config", "epoch_time_ms", "step_time_ms", "cache",
              "ratio_linear_over_cached", "ratio_frozen_over_full", "targets", "target_met"):
    assert key in res, key
  assert res["benchmark"] == "cached_probe_epoch_time"
  names = {"full_finetune", "linear_probe", "cached_probe"}
  assert set(res["epoch_time_ms"]) == names == set(res["compile_s"])
  assert all(_positive(v) for v in res["epoch_time_ms"].values()), res["epoch_time_ms"]
  cache = res["cache"]
  assert _positive(cache["feature_extraction_s"])
  assert cache["feature_shape"][0] == res["config"]["num_examples"]
  assert _positive(res["ratio_linear_over_cached"]) and _positive(res["ratio_frozen_over_full"])
  assert isinstance(res["target_met"], bool)
  # Both probes train the same heads; the cached one has no trunk at all.
  cost = res["xla_cost"]
  assert (cost["cached_probe"]["params"] == cost["cached_probe"]["trainable_params"]
          == cost["linear_probe"]["trainable_params"] < cost["full_finetune"]["trainable_params"])


def test_soft_vs_separate_json(outputs):
  res = _parse(outputs, "soft_vs_separate_step_time")
  for key in ("benchmark", "config", "sizes", "ratio", "target", "target_met"):
    assert key in res, key
  assert res["benchmark"] == "soft_vs_separate_step_time"
  small = res["sizes"]["small"]
  assert set(small["step_time_ms"]) == {"soft", "separate", "single_task_stacked"}
  assert all(_positive(v) for v in small["step_time_ms"].values()), small["step_time_ms"]
  assert all(_positive(v) for v in small["compile_s"].values()), small["compile_s"]
  assert _positive(small["ratio"]) and small["ratio"] == res["ratio"]
  # Same model per task: the stacked program does about the separate models' work.
  assert 0.5 < small["flops_ratio_soft_over_separate"] < 2.0, small["xla_cost"]
  assert isinstance(res["target_met"], bool)


def test_num_seeds_json(outputs):
  res = _parse(outputs, "num_seeds_time")
  for key in ("benchmark", "config", "wall_s", "extrapolated", "ratio", "ratio_paired_median",
              "target", "target_met"):
    assert key in res, key
  assert res["benchmark"] == "num_seeds_time"
  assert set(res["wall_s"]) == {"batched", "sequential_per_run", "sequential_total"}
  assert all(_positive(v) for v in res["wall_s"].values()), res["wall_s"]
  assert res["extrapolated"] == (res["config"]["sequential_runs_timed"] < res["config"]["num_seeds"])
  assert _positive(res["ratio"])
  assert isinstance(res["target_met"], bool)


def test_weighting_scale_json(outputs):
  out = _parse(outputs, "weighting_scale")
  assert set(out["targets"]) == {"aggregator_over_mean_at_T", "gramian_temp_over_ew",
                                 "gramian_no_t_by_p_buffer", "representation_over_ew"}
  for key, times in out["step_time_ms"].items():
    assert times and all(math.isfinite(v) and v > 0 for v in times.values()), key
  # The HLO check can tell the paths apart: the stored Jacobian has the T x P buffer.
  for key, found in out["t_by_p_buffer"].items():
    if "jacobian/mean" in found:
      assert found["jacobian/mean"] and not found["gramian/mean"], key


def test_sharding_step_time_json(outputs):
  out = _parse(outputs, "sharding_step_time")
  assert set(out["step_time_ms"]) == {"replicated", "fsdp", "tensor_parallel"}
  assert all(_positive(v) for v in out["step_time_ms"].values())
  pd = out["per_device"]
  # FSDP holds less than a replica per device (what the layout is for).
  assert pd["fsdp"]["param_bytes_device0"] < 0.5 * pd["replicated"]["param_bytes_device0"]
