"""Smoke test of benchmarks/input_throughput.py: one JSON object, every rate positive."""

import json
import math
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_input_throughput_json():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "input_throughput.py"),
                         "--steps", "2", "--workers", "0", "--batch", "32"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout)
  for config in ("mnist1d", "image"):
    assert set(out[config]) == {"in_memory", "workers_0"}
    for row in out[config].values():
      for key in ("input_examples_per_s", "step_ms_fixed_batch", "step_ms_with_prefetching_feed"):
        assert math.isfinite(row[key]) and row[key] > 0, (config, key, row)
