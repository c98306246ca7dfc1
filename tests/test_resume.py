"""Kill-and-resume: a resumed run ends with exactly the parameters of an uninterrupted one."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import jax
import pytest

from conftest import ROOT, tiny_config
from mtl_jax import train

STEPS = 1500


def _config():
  c = tiny_config()
  c.num_train_steps = STEPS
  c.checkpoint_every_steps = 100
  c.log_every_steps = 100
  return c


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_resume_in_process_is_bitwise_identical(tmp_path):
  c = tiny_config()
  c.num_train_steps = 30
  c.checkpoint_every_steps = 10
  train.train_and_evaluate(c, str(tmp_path / "full"))
  # Stop at 10 (the schedule depends on num_train_steps, so use a constant one).
  assert c.optimizer.schedule == "cosine"
  c.optimizer.schedule = "constant"
  train.train_and_evaluate(c, str(tmp_path / "const_full"))
  c.num_train_steps = 10
  train.train_and_evaluate(c, str(tmp_path / "const_part"))
  c.num_train_steps = 30  # allowed change: run longer on the same workdir
  train.train_and_evaluate(c, str(tmp_path / "const_part"))
  _assert_same_params(train.final_params(str(tmp_path / "const_full")),
                      train.final_params(str(tmp_path / "const_part")))


def _cli(workdir):
  c = _config()
  return [sys.executable, "-m", "mtl_jax.main", "--config=configs/quickstart.py",
          f"--workdir={workdir}", f"--config.num_train_steps={c.num_train_steps}",
          f"--config.checkpoint_every_steps={c.checkpoint_every_steps}",
          f"--config.log_every_steps={c.log_every_steps}", "--config.eval_every_steps=0",
          f"--config.batch_size={c.batch_size}", "--config.progress_bar=False",
          "--config.model.trunk.features=(32, 32)"]


def _kill_after_first_checkpoint(workdir, sig):
  proc = subprocess.Popen(_cli(workdir), cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  ckpts = os.path.join(workdir, "checkpoints")
  deadline = time.time() + 240
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts)):
      proc.send_signal(sig)
      break
    time.sleep(0.02)
  _, err = proc.communicate(timeout=240)
  return proc.returncode, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """The reference both kill tests compare with (one 1500-step run for the file)."""
  ref = str(tmp_path_factory.mktemp("resume") / "ref")
  train.train_and_evaluate(_config(), ref)
  return train.final_params(ref)


def _run_interrupted(tmp_path, ref_params, sig, expected_rc):
  work = str(tmp_path / "killed")
  rc, err = _kill_after_first_checkpoint(work, sig)
  assert rc == expected_rc, err[-3000:]
  saved = max(int(d) for d in os.listdir(os.path.join(work, "checkpoints")) if d.isdigit())
  assert saved < STEPS, "the run finished before it was interrupted"
  done = subprocess.run(_cli(work), cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  _assert_same_params(ref_params, train.final_params(work))


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path, uninterrupted):
  _run_interrupted(tmp_path, uninterrupted, signal.SIGKILL, -signal.SIGKILL)


def test_sigterm_saves_then_rerun_matches_uninterrupted(tmp_path, uninterrupted):
  _run_interrupted(tmp_path, uninterrupted, signal.SIGTERM, 143)
