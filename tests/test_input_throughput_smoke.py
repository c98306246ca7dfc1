"""Smoke test of benchmarks/input_throughput.py: one JSON object, every rate positive."""

import math

from conftest import run_benchmark


def test_input_throughput_json():
  out = run_benchmark("input_throughput.py", "--steps", "2", "--workers", "0", "--batch", "32",
                      "--max-examples", "512")
  for config in ("mnist1d", "image"):
    assert set(out[config]) == {"in_memory", "workers_0"}
    for row in out[config].values():
      for key in ("input_examples_per_s", "step_ms_fixed_batch", "step_ms_with_prefetching_feed"):
        assert math.isfinite(row[key]) and row[key] > 0, (config, key, row)
