"""Trains in a fresh process, for tests that need a given number of CPU devices.

XLA fixes the simulated host device count when JAX starts, so a test that
wants 8 CPU devices runs training in a child process:

  python tests/_train_subprocess.py SPEC.json

SPEC is {"num_cpu_devices": 8, "runs": [{"workdir": ..., "overrides": {...},
"expect_error": false, "set": {...}}, ...]}. Each run trains configs/quickstart.py
with ``overrides`` applied (and top-level keys in ``set`` added). A run with ``expect_error`` records the exception it
raised in ``workdir/error.json`` instead of failing. Several runs share one
process so the JAX import and the data generation are paid once.

``train_metrics`` and ``checkpoint_params`` read a run's outputs for the tests.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def quickstart_config(overrides: dict):
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      "quickstart", os.path.join(REPO, "configs", "quickstart.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def train_metrics(workdir: str) -> list:
  """The ``train/*`` lines of ``workdir/metrics.jsonl``, in step order, timing dropped."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [{k: v for k, v in r.items() if k != "train/steps_per_sec"}
          for r in rows if "train/loss" in r]


def checkpoint_params(workdir: str):
  """(step, params) of the latest checkpoint in ``workdir``, as NumPy, on any topology."""
  from mtl_jax.checkpoint import load_params_numpy
  directory = os.path.join(workdir, "checkpoints")
  step = max(int(d) for d in os.listdir(directory) if d.isdigit())
  return step, load_params_numpy(workdir, step)


def main(spec_path: str) -> None:
  with open(spec_path) as f:
    spec = json.load(f)
  n = int(spec.get("num_cpu_devices", 1))
  os.environ["XLA_FLAGS"] = " ".join(  # the parent's flags (tests/conftest.py) plus the count
      [f for f in os.environ.get("XLA_FLAGS", "").split()
       if not f.startswith("--xla_force_host_platform_device_count")]
      + [f"--xla_force_host_platform_device_count={n}"])
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, REPO)
  import jax

  from mtl_jax import train
  assert jax.device_count() == n, (jax.device_count(), n)
  if spec.get("per_device_bytes"):  # {"out": path, "set": {...}}: parameter bytes per device
    from mtl_jax import parallel, sharding
    from mtl_jax.run import build_program
    import numpy as np
    config = quickstart_config({})
    with config.unlocked():
      for k, v in spec["per_device_bytes"]["set"].items():
        config[k] = v
    mesh = parallel.make_mesh(None, int((config.get("mesh") or {}).get("model", 1)))
    program = build_program(config, np.zeros((1, 40), np.float32), mesh)
    total = sum(x.nbytes for x in jax.tree.leaves(program.state.params))
    with open(spec["per_device_bytes"]["out"], "w") as f:
      json.dump({"total": total,
                 "params": sharding.per_device_bytes(program.state.params),
                 "opt_state": sharding.per_device_bytes(program.state.opt_state),
                 "opt_total": sum(x.nbytes for x in jax.tree.leaves(program.state.opt_state))}, f)
  for run in spec["runs"]:
    config = quickstart_config(run["overrides"])
    with config.unlocked():  # keys the quickstart config does not set (e.g. sharding)
      for k, v in run.get("set", {}).items():
        config[k] = v
    if not run.get("expect_error"):
      train.train_and_evaluate(config, run["workdir"])
      continue
    os.makedirs(run["workdir"], exist_ok=True)
    try:
      train.train_and_evaluate(config, run["workdir"])
      error = None
    except Exception as e:  # noqa: BLE001 (the test inspects it)
      error = {"type": type(e).__name__, "message": str(e)}
    with open(os.path.join(run["workdir"], "error.json"), "w") as f:
      json.dump(error, f)


if __name__ == "__main__":
  main(sys.argv[1])
