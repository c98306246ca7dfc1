"""Runs ``train_and_evaluate`` in a fresh process, for tests that need a device count.

XLA's simulated host device count is fixed when JAX initialises, so a test
that wants 8 CPU devices must run training in a child process:

  python tests/_train_subprocess.py SPEC.json

SPEC is {"num_cpu_devices": 8, "runs": [{"workdir": ..., "overrides": {...}}, ...]}.
Each run trains configs/quickstart.py with ``overrides`` applied and writes
``workdir/params.npz`` (the final checkpoint's parameters, flattened by path).
Several runs share one process so the JAX import and data generation are paid once.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def flat_params(tree) -> dict:
  """{"a/b/kernel": array} so that npz can hold the nested params."""
  import jax
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def main(spec_path: str) -> None:
  with open(spec_path) as f:
    spec = json.load(f)
  n = int(spec.get("num_cpu_devices", 1))
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={n}")
  os.environ["JAX_PLATFORMS"] = "cpu"
  sys.path.insert(0, REPO)
  import importlib.util

  import jax
  import numpy as np

  from mtl_jax import train
  assert jax.device_count() == n, (jax.device_count(), n)
  loader = importlib.util.spec_from_file_location(
      "quickstart", os.path.join(REPO, "configs", "quickstart.py"))
  quickstart = importlib.util.module_from_spec(loader)
  loader.loader.exec_module(quickstart)
  for run in spec["runs"]:
    config = quickstart.get_config()
    config.update_from_flattened_dict(run["overrides"])
    train.train_and_evaluate(config, run["workdir"])
    params = train.final_params(run["workdir"])
    np.savez(os.path.join(run["workdir"], "params.npz"), **flat_params(params))


if __name__ == "__main__":
  main(sys.argv[1])
