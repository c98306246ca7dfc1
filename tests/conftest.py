"""Shared test helpers: tiny configs that train in seconds on CPU, and benchmark smoke runs."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """Quickstart shrunk to a few steps, no progress bar."""
  from configs import quickstart
  config = quickstart.get_config()
  config.num_train_steps = 20
  config.batch_size = 32
  config.eval_batch_size = 512
  config.log_every_steps = 5
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 10
  config.progress_bar = False
  config.model.trunk.features = (32, 32)
  for k, v in overrides.items():
    config[k] = v
  return config


@pytest.fixture
def workdir(tmp_path):
  return str(tmp_path / "run")


def flat_params(tree) -> dict:
  """{"trunk/block_0/Dense_0/kernel": np.ndarray, ...} for comparing parameter trees."""
  import numpy as np
  from flax import traverse_util
  return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(tree).items()}


def train_upstream(workdir: str, steps: int) -> str:
  """A small 3-block MLP trained on MNIST-1D digits: the backbone for transfer tests."""
  from mtl_jax import train
  c = tiny_config()
  c.tasks = [dict(name="digit", kind="multiclass", num_outputs=10)]
  c.model.trunk.features = (32, 32, 32)
  c.num_train_steps = steps
  train.train_and_evaluate(c, workdir)
  return workdir


def benchmark_env() -> dict:
  """Environment for a benchmark script run by a test: the repository on PYTHONPATH, the CPU
  backend and cheap XLA codegen. Plumbing only: real measurements run without these."""
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
                      " --xla_llvm_disable_expensive_passes=true").strip()
  return env


def run_benchmark(script: str, *args: str, timeout: int = 300) -> dict:
  """Runs ``benchmarks/<script>`` with ``args``; returns the one JSON object it prints."""
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                        cwd=ROOT, env=benchmark_env(), capture_output=True, text=True,
                        timeout=timeout)
  assert proc.returncode == 0, f"{script} exited {proc.returncode}; stderr:\n{proc.stderr[-3000:]}"
  try:
    return json.loads(proc.stdout)  # stdout must be exactly one JSON object
  except json.JSONDecodeError as e:
    raise AssertionError(f"{script}: stdout is not one JSON object ({e}):\n{proc.stdout[:2000]}")
