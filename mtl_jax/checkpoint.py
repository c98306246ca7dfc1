"""Checkpoints under ``workdir/checkpoints`` with orbax.

A checkpoint holds the whole train state (params, optimizer state, RNG,
step) and the data iterator state, so rerunning the same command resumes on
exactly the next batch. Orbax writes into a temporary directory and renames
it when complete, so a run killed mid-save leaves the previous checkpoint
intact. ``workdir/config.json`` records the config a workdir was made with;
resuming with a config that changes anything but the run-length and logging
keys is refused, naming the keys.
"""

import json
import os
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

# Keys that may change between runs on one workdir (e.g. to train longer).
RESUMABLE_KEYS = ("num_train_steps", "log_every_steps", "eval_every_steps",
                  "checkpoint_every_steps", "keep_checkpoints", "progress_bar")


class IncompatibleWorkdirError(ValueError):
  """The workdir was written by a config this run cannot resume from."""


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(_flatten(v, key + "."))
    else:
      out[key] = v
  return out


def check_workdir_config(workdir: str, config_json: str, is_main: bool = True) -> None:
  """Writes ``workdir/config.json``; refuses a config that differs from a resumable run's.

  The guard applies once the workdir holds a checkpoint (a run that failed
  before its first save can be rerun with a fixed config). Comparison is on
  the JSON form, so ``(1, 2)`` and ``[1, 2]`` are equal.
  """
  path = os.path.join(workdir, "config.json")
  new = json.loads(config_json)
  ckpts = os.path.join(workdir, "checkpoints")
  has_checkpoint = os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts))
  if os.path.exists(path) and has_checkpoint:
    with open(path) as f:
      old = json.load(f)
    a, b = _flatten(old), _flatten(new)
    differ = sorted(k for k in set(a) | set(b)
                    if a.get(k, "<absent>") != b.get(k, "<absent>")
                    and k.split(".")[0] not in RESUMABLE_KEYS)
    if differ:
      details = "; ".join(f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
                          for k in differ)
      raise IncompatibleWorkdirError(
          f"workdir {workdir} was written by a different config ({details}). Use a new "
          f"--workdir, or only change {list(RESUMABLE_KEYS)} when resuming.")
  if is_main:
    os.makedirs(workdir, exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(new, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


class Checkpointer:
  """Thin wrapper over ``ocp.CheckpointManager`` with items ``state`` and ``data``."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "data"))

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def save(self, step: int, state: Any, data_state: dict, force: bool = False) -> None:
    self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                  data=ocp.args.JsonSave(data_state)),
                    force=force)

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Tuple[Any, dict]:
    """Restores onto the shapes, dtypes and shardings of ``abstract_state``."""
    step = self.latest_step() if step is None else step
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    try:
      restored = self._mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError) as e:
      raise IncompatibleWorkdirError(
          f"checkpoint at step {step} in {self.directory} does not fit this model: {e}") from e
    return restored["state"], restored["data"]

  def wait(self) -> None:
    self._mngr.wait_until_finished()

  def close(self) -> None:
    self._mngr.wait_until_finished()
    self._mngr.close()


def load_params_numpy(workdir: str, step: Optional[int] = None):
  """The params of a run's checkpoint (latest by default) as host NumPy arrays.

  Saved shardings are ignored, so a checkpoint written on 8 devices or by
  several processes loads in a 1-device process (for transfer, tests, tools).
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}")
  mngr = ocp.CheckpointManager(directory, item_names=("state", "data"))
  steps = sorted(mngr.all_steps())
  step = mngr.latest_step() if step is None else step
  mngr.close()
  if step is None or step not in steps:
    raise FileNotFoundError(f"checkpoint step {step} not in {directory} (has {steps})")
  path = os.path.join(directory, str(step), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))["params"]
