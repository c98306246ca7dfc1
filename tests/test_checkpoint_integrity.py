"""Verified checkpoints: corruption on disk is caught, resuming falls back to an intact one.

One 20-step run (checkpoints at 10 and 20) is copied per test and damaged
the way a disk or a careless copy would: flipped bytes, a truncated or a
deleted array file, a value rewritten in a well-formed file, a full disk during a
save, an unparsable config.json.
"""

import errno
import glob
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.handlers import json_checkpoint_handler

from conftest import tiny_config
from mtl_jax import partial_load, train
from mtl_jax.checkpoint import (CheckpointFallbackWarning, CorruptCheckpointError, DiskFullError,
                                IncompatibleWorkdirError, load_params_numpy)


def _config():
  c = tiny_config()
  c.num_train_steps = 20
  c.checkpoint_every_steps = 10
  c.optimizer.schedule = "constant"
  return c


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ckpt") / "orig")
  train.train_and_evaluate(_config(), workdir)
  return workdir, load_params_numpy(workdir)


def _copy(trained, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(trained[0], workdir)
  return workdir


def _biggest_array_file(workdir, step):
  files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "ocdbt.process_0",
                                 "d", "*"))
  return max(files, key=os.path.getsize)


def _flip(path):
  b = bytearray(open(path, "rb").read())
  for start in range(64, len(b) - 8, len(b) // 8):  # 8 blocks spread over the file
    for i in range(start, start + 8):
      b[i] ^= 0xFF
  open(path, "wb").write(bytes(b))


def _rewrite_one_value(workdir, step):
  """Changes one parameter inside a well-formed array file: only the checksum can tell."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    meta = ckptr.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
    tree = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
    tree["params"]["trunk"]["block_0"]["Dense_0"]["kernel"][3, 4] += 1e-3
    ckptr.save(path, args=ocp.args.PyTreeSave(tree), force=True)


def _truncate(path):
  b = open(path, "rb").read()
  open(path, "wb").write(b[:len(b) // 2])


def _assert_same(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("damage", ["flip", "rewrite", "truncate", "missing"])
def test_corrupt_newest_checkpoint_falls_back_to_older_one(trained, tmp_path, damage):
  workdir = _copy(trained, tmp_path)
  if damage == "rewrite":
    _rewrite_one_value(workdir, 20)
  else:
    {"flip": _flip, "truncate": _truncate, "missing": os.remove}[damage](
        _biggest_array_file(workdir, 20))
  # Reading step 20 explicitly fails, naming the checkpoint.
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/20"):
    load_params_numpy(workdir, 20)
  # Resuming warns, restarts from step 10 and retrains to exactly the original step 20.
  with pytest.warns(CheckpointFallbackWarning,
                    match=r"CORRUPT CHECKPOINT\(S\) \[20\].*newest intact checkpoint, step 10"):
    train.train_and_evaluate(_config(), workdir)
  assert os.path.isdir(os.path.join(workdir, "corrupt_checkpoints", "20"))
  _assert_same(load_params_numpy(workdir), trained[1])


def test_changed_value_is_caught_by_the_checksum(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  _rewrite_one_value(workdir, 20)
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/20: array "
                     r"'params/trunk/block_0/Dense_0/kernel' \(40, 32\) fails its checksum"):
    load_params_numpy(workdir, 20)


def test_all_checkpoints_corrupt_fails_naming_them(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  for step in (10, 20):
    _flip(_biggest_array_file(workdir, step))
  with pytest.raises(CorruptCheckpointError,
                     match=r"no intact checkpoint in .*checkpoints/20.*checkpoints/10"):
    train.train_and_evaluate(_config(), workdir)
  # Nothing was moved: the evidence stays where it was.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]


def test_init_from_a_corrupt_checkpoint(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  os.remove(_biggest_array_file(workdir, 20))
  with pytest.raises(CorruptCheckpointError, match=r"checkpoints/20: cannot be read"):
    partial_load.load_checkpoint_params(workdir, 20)
  with pytest.warns(CheckpointFallbackWarning, match=r"newest intact checkpoint, step 10"):
    loaded = partial_load.load_checkpoint_params(workdir)
  assert set(loaded)  # the step-10 params
  _flip(_biggest_array_file(workdir, 10))
  c = _config()
  c.init_from = dict(workdir=workdir)
  with pytest.raises(CorruptCheckpointError, match=r"no intact checkpoint"):
    train.train_and_evaluate(c, str(tmp_path / "downstream"))


def test_disk_full_during_save_keeps_previous_checkpoint(trained, tmp_path, monkeypatch):
  """The (asynchronous) write of step 20 fails with ENOSPC; step 10 stays usable."""
  write = json_checkpoint_handler.JsonCheckpointHandler._save_fn

  async def full_disk(self, x, directory):
    if f"{os.sep}20." in str(directory):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return await write(self, x, directory)

  monkeypatch.setattr(json_checkpoint_handler.JsonCheckpointHandler, "_save_fn", full_disk)
  workdir = str(tmp_path / "run")
  with pytest.raises(DiskFullError, match=r"disk full while saving the checkpoint of step 20 .*"
                                          r"previous checkpoint \(step 10\) is intact"):
    train.train_and_evaluate(_config(), workdir)
  monkeypatch.undo()
  train.train_and_evaluate(_config(), workdir)  # space freed: resumes from 10
  _assert_same(load_params_numpy(workdir), trained[1])


def test_unparsable_config_json_is_a_clear_error(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  with open(os.path.join(workdir, "config.json"), "a") as f:
    f.write("}garbage")
  with pytest.raises(IncompatibleWorkdirError, match=r"config.json is not valid JSON \(line"):
    train.train_and_evaluate(_config(), workdir)


def test_missing_checksum_file_counts_as_corrupt(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, "checkpoints", "20", "checksums", "metadata"))
  with pytest.warns(CheckpointFallbackWarning, match=r"20/checksums: unreadable.*step 10"):
    train.train_and_evaluate(_config(), workdir)
  _assert_same(load_params_numpy(workdir), trained[1])


def test_checkpoint_from_before_checksums_restores_with_a_warning(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  for step in (10, 20):
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step), "checksums"))
  with pytest.warns(CheckpointFallbackWarning, match=r"checkpoints/20 has no checksums \(older "
                                                     r"format\): restored unverified"):
    train.train_and_evaluate(_config(), workdir)  # step 20 of 20: restores, evaluates
  _assert_same(load_params_numpy(workdir), trained[1])
