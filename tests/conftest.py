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

# The suite's time is XLA:CPU compilation (~85% of it, measured with
# jax.monitoring's backend_compile events): hundreds of small programs, each
# compiled once and run for a few steps. These flags make XLA:CPU's code
# generation about 3x cheaper (LLVM at -O0, XLA's classic loop emitters
# instead of the fusion emitters); what a program computes is the same, only
# how fast its kernels run changes. Subprocesses inherit them through the
# environment (``child_env``). MTL_JAX_TEST_FULL_XLA=1 runs the suite with
# XLA's default pipeline instead.
FAST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
                  " --xla_cpu_use_fusion_emitters=false")


def _fast_flags_supported() -> bool:
  """XLA aborts on a flag it does not know: probe any jaxlib other than the one checked."""
  from importlib import metadata
  if metadata.version("jaxlib").startswith("0.10."):
    return True
  env = dict(os.environ, XLA_FLAGS=FAST_XLA_FLAGS, JAX_PLATFORMS="cpu")
  probe = "import jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
  return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                        timeout=120).returncode == 0


if os.environ.get("MTL_JAX_TEST_FULL_XLA") != "1" and "xla_cpu_use_fusion_emitters" not in (
    os.environ.get("XLA_FLAGS", "")) and _fast_flags_supported():
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FAST_XLA_FLAGS).strip()


def child_env(device_count=None, **extra) -> dict:
  """The environment for a Python subprocess of a test: this process's XLA flags (without a
  device count of its own), ``device_count`` simulated CPU devices if given, and ``extra``."""
  env = dict(os.environ, **extra)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  if device_count:
    flags.append(f"--xla_force_host_platform_device_count={device_count}")
  env["XLA_FLAGS"] = " ".join(flags)
  return env


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
  env = child_env()
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.setdefault("JAX_PLATFORMS", "cpu")
  if "xla_backend_optimization_level" not in env["XLA_FLAGS"]:  # MTL_JAX_TEST_FULL_XLA=1
    env["XLA_FLAGS"] = (env["XLA_FLAGS"] + " --xla_backend_optimization_level=0"
                        " --xla_llvm_disable_expensive_passes=true").strip()
  return env


class _BenchServer:
  """One ``tests/_bench_server.py`` process per test process, started on first use: the
  benchmark scripts share its imports (see that file for why)."""
  proc = None
  log = None

  @classmethod
  def run(cls, script: str, args, timeout: int):
    import select
    import tempfile
    if cls.proc is None or cls.proc.poll() is not None:
      cls.log = tempfile.NamedTemporaryFile("w+", prefix="bench_server_", suffix=".log")
      cls.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "_bench_server.py")],
                                  cwd=ROOT, env=benchmark_env(), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=cls.log, text=True)
    start = cls.log.seek(0, 2)
    cls.proc.stdin.write(json.dumps({"script": script, "args": list(args)}) + "\n")
    cls.proc.stdin.flush()
    ready, _, _ = select.select([cls.proc.stdout], [], [], timeout)
    line = cls.proc.stdout.readline() if ready else ""
    cls.log.seek(start)
    stderr = cls.log.read()
    if not line:  # timed out or died: the next call starts a fresh server
      cls.proc.kill()
      cls.proc.wait()
      raise AssertionError(f"{script} gave no answer within {timeout} s (exit code "
                           f"{cls.proc.returncode}); stderr:\n{stderr[-3000:]}")
    answer = json.loads(line)
    return answer["rc"], answer["stdout"], (stderr + answer["error"])


def run_benchmark(script: str, *args: str, timeout: int = 300, fresh: bool = False) -> dict:
  """Runs ``benchmarks/<script>`` with ``args``; returns the one JSON object it prints.

  Scripts run one after another in a shared server process (``tests/_bench_server.py``);
  ``fresh=True`` runs this one in a subprocess of its own (e.g. when it sets XLA_FLAGS).
  """
  path = os.path.join(ROOT, "benchmarks", script)
  if fresh:
    proc = subprocess.run([sys.executable, path, *args], cwd=ROOT, env=benchmark_env(),
                          capture_output=True, text=True, timeout=timeout)
    rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
  else:
    rc, stdout, stderr = _BenchServer.run(path, args, timeout)
  assert rc == 0, f"{script} exited {rc}; stderr:\n{stderr[-3000:]}"
  try:
    return json.loads(stdout)  # stdout must be exactly one JSON object
  except json.JSONDecodeError as e:
    raise AssertionError(f"{script}: stdout is not one JSON object ({e}):\n{stdout[:2000]}")


# ``make test-fast`` (the inner loop) runs everything but these files: the end-to-end programs,
# subprocess runs (devices, hosts, kills), benchmark smokes and studies, which are where the
# suite's time goes (measured per file with jax.monitoring's compile events and rusage; the
# list is kept so that test-fast stays under 3 minutes on 2 cores). ``make test`` runs all.
SLOW_FILES = frozenset({
    "test_benchmarks_smoke.py", "test_streaming.py", "test_gramian_path.py",
    "test_combinations.py", "test_solvers_scale.py", "test_resume.py", "test_vision_train.py",
    "test_gramian_rows.py", "test_weighting_train.py", "test_sharding.py",
    "test_text_end_to_end.py", "test_vision_models.py", "test_grad_accum.py",
    "test_input_throughput_smoke.py", "test_weighting_vs_torch_smoke.py", "test_multihost.py",
    "test_routing.py", "test_text_benchmarks.py", "test_bert.py", "test_solver_scale_bench.py",
    "test_mixing_benchmark.py", "test_parallel.py", "test_pytree_sharding.py",
    "test_device_suite_smoke.py", "test_dense_train.py", "test_task_embedding.py",
    "test_ernie_continual_study.py", "test_mlm_end_to_end.py", "test_mlm_benchmark_smoke.py",
    "test_mlm_parity.py", "test_mtdnn_pipeline.py", "test_mtdnn_study.py",
    "test_dense_end_to_end.py", "test_dense_study.py", "test_dense_bench_smoke.py",
    "test_dense_methods.py",
})


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if os.path.basename(str(item.fspath)) in SLOW_FILES:
      item.add_marker(pytest.mark.slow)
