"""Multi-host: two CPU processes joined by jax.distributed train what one process trains.

Each process has one CPU device and feeds its half of the global batch; the
gradient all-reduce runs over gloo. Both processes share one workdir, as on
a cluster with a shared filesystem: process 0 writes metrics, results and
the checkpoint metadata, and orbax synchronises the save across processes.

"The processes agree" is checked through the outputs: every step's loss is a
global mean over both halves of the batch, and the final evaluation gathers
outputs that each process computed with its own copy of the replicated
params, so a process that drifted would move the losses or the results away
from the single-process run. Tolerances: as in test_parallel.py, reduction
order differs (2 partial sums vs one), so equality is to float32 round-off.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

from _train_subprocess import REPO, checkpoint_params, train_metrics

from conftest import child_env

RTOL, ATOL = 1e-5, 1e-6
NUM_STEPS = 10
TIMEOUT_S = 300

OVERRIDES = {"num_train_steps": NUM_STEPS, "batch_size": 64, "eval_batch_size": 500,
             "log_every_steps": 1, "eval_every_steps": 0, "checkpoint_every_steps": 0,
             "progress_bar": False}


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _command(workdir, *extra):
  return ([sys.executable, "-m", "mtl_jax.main", "--config=configs/quickstart.py",
           f"--workdir={workdir}"] + [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
          + list(extra))


def _run_all(commands, logdir):
  """Runs ``commands`` at once; returns their exit codes.

  Fails fast: when one process exits non-zero its peer would otherwise wait
  for it in a collective until the coordinator times out, so the others are
  killed. Everything is killed after TIMEOUT_S, so a hang fails the test.
  """
  env = child_env()
  env["JAX_PLATFORMS"] = "cpu"
  procs = []
  for i, cmd in enumerate(commands):
    log = open(logdir / f"log{i}.txt", "w")
    procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log,
                                   stderr=subprocess.STDOUT), log))
  deadline = time.monotonic() + TIMEOUT_S
  try:
    while any(p.poll() is None for p, _ in procs):
      failed = any(p.returncode not in (None, 0) for p, _ in procs)
      if failed or time.monotonic() > deadline:
        break
      time.sleep(0.2)
  finally:
    for p, log in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
      log.close()
  return [p.returncode for p, _ in procs]


def _logs(logdir, n):
  return "\n".join(f"--- process {i}:\n" + (logdir / f"log{i}.txt").read_text()[-3000:]
                   for i in range(n))


def test_two_processes_match_one(tmp_path):
  multi, single = tmp_path / "multi", tmp_path / "single"
  port = _free_port()
  commands = [_command(multi, f"--coordinator_address=127.0.0.1:{port}",
                       "--num_processes=2", f"--process_id={i}") for i in range(2)]
  commands.append(_command(single))  # the reference, run alongside
  codes = _run_all(commands, tmp_path)
  assert codes == [0, 0, 0], f"exit codes {codes}\n{_logs(tmp_path, 3)}"
  assert "2 global devices" in (tmp_path / "log1.txt").read_text()

  a, b = train_metrics(multi), train_metrics(single)
  assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, NUM_STEPS + 1))
  for ra, rb in zip(a, b):
    for k in rb:
      np.testing.assert_allclose(ra[k], rb[k], rtol=RTOL, atol=ATOL,
                                 err_msg=f"{k} at step {rb['step']}")

  step_a, params_a = checkpoint_params(multi)
  step_b, params_b = checkpoint_params(single)
  assert step_a == step_b == NUM_STEPS
  for (path, x), (_, y) in zip(_leaves(params_a), _leaves(params_b), strict=True):
    np.testing.assert_allclose(x, y, rtol=RTOL, atol=ATOL, err_msg=path)

  res_a = json.loads((multi / "results.json").read_text())
  res_b = json.loads((single / "results.json").read_text())
  assert res_a.keys() == res_b.keys() == {"validation", "test"}
  for split in res_b:
    for task in res_b[split]:
      for metric, value in res_b[split][task].items():
        # Accuracy/AUC may flip one example at a near-tie.
        atol = 2e-3 if metric in ("accuracy", "auc") else ATOL
        np.testing.assert_allclose(res_a[split][task][metric], value, rtol=RTOL, atol=atol,
                                   err_msg=f"{split}/{task}/{metric}")


def _leaves(tree, prefix=""):
  for k in sorted(tree):
    if isinstance(tree[k], dict):
      yield from _leaves(tree[k], f"{prefix}{k}/")
    else:
      yield f"{prefix}{k}", tree[k]
