"""Checkpoints under ``workdir/checkpoints`` with orbax, verified by checksums.

A checkpoint holds the whole train state (params, optimizer state, RNG,
step) and the data iterator state, so rerunning the same command resumes on
exactly the next batch. Orbax writes into a temporary directory and renames
it when complete, so a run killed mid-save (or a save that hits a full disk)
leaves the previous checkpoint intact.

Every checkpoint also stores a CRC32 of each saved array and of the data
state (item ``checksums``), taken from the in-memory state at save time. A
restore recomputes them, so bytes changed on disk after the save (a flipped
block, a truncated or deleted file) are caught: resuming then falls back to
the newest intact checkpoint with a loud warning and moves the corrupt ones to
``workdir/corrupt_checkpoints/`` (so the rerun can save those steps again), or
fails naming the checkpoint and array when none is intact.

``workdir/config.json`` records the config a workdir was made with;
resuming with a config that changes anything but the run-length and logging
keys is refused, naming the keys.
"""

import errno
import json
import os
import shutil
import warnings
import zlib
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from mtl_jax import config_keys

# Keys that may change between runs on one workdir (e.g. to train longer).
RESUMABLE_KEYS = ("num_train_steps", "log_every_steps", "eval_every_steps",
                  "checkpoint_every_steps", "keep_checkpoints", "progress_bar",
                  # where the arrays live, not what they are: a run resumes onto another mesh
                  "num_devices", "mesh", "sharding")


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


def _read_workdir_config(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise IncompatibleWorkdirError(
        f"{path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); it records the "
        f"config this workdir was trained with. Restore it, or use a new --workdir.") from None


def check_workdir_config(workdir: str, config_json: str, is_main: bool = True) -> None:
  """Writes ``workdir/config.json``; refuses a config that differs from a resumable run's.

  The guard applies once the workdir holds a checkpoint (a run that failed
  before its first save can be rerun with a fixed config). Comparison is on
  the JSON form, so ``(1, 2)`` and ``[1, 2]`` are equal, with absent top-level keys
  read as their defaults (``config_keys.DEFAULTS``): a config.json written with the
  defaults filled in (``python -m mtl_jax.main``) and one without resume each other.
  """
  path = os.path.join(workdir, "config.json")
  new = json.loads(config_json)
  ckpts = os.path.join(workdir, "checkpoints")
  has_checkpoint = os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts))
  if os.path.exists(path) and has_checkpoint:
    old = _read_workdir_config(path)
    a, b = (_flatten(json.loads(json.dumps(config_keys.with_defaults(c)))) for c in (old, new))
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


class CorruptCheckpointError(RuntimeError):
  """No intact checkpoint: every candidate failed its checksum or could not be read."""


class CheckpointFallbackWarning(UserWarning):
  """The newest checkpoint was corrupt; an older intact one was used instead."""


class DiskFullError(OSError):
  """A checkpoint save ran out of disk space; the previous checkpoint is kept."""


def _path_str(path) -> str:
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def _host_array(x) -> Optional[np.ndarray]:
  """The bytes a checksum covers: the full array on this host, or None if sharded across hosts."""
  if isinstance(x, jax.Array):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    if not x.is_fully_addressable:
      if not x.is_fully_replicated:
        return None
      x = x.addressable_data(0)
  return np.asarray(x)  # tobytes() is C-order whatever the layout


def _array_record(x) -> dict:
  a = _host_array(x)
  if a is None:
    return {"shape": list(np.shape(x)), "dtype": str(x.dtype), "crc32": None}
  raw = np.ascontiguousarray(a).reshape(-1).view(np.uint8)  # no copy when already C-ordered
  return {"shape": list(a.shape), "dtype": str(a.dtype), "crc32": zlib.crc32(raw)}


def tree_checksums(tree) -> Dict[str, dict]:
  """{"params/trunk/block_0/Dense_0/kernel": {shape, dtype, crc32}, ...} for every leaf."""
  return {_path_str(p): _array_record(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _json_crc(obj) -> int:
  return zlib.crc32(json.dumps(obj, sort_keys=True).encode())


def _verify(saved: Dict[str, dict], restored: Dict[str, dict], where: str) -> None:
  """Raises CorruptCheckpointError naming the first array whose checksum differs."""
  for key, rec in restored.items():
    want = saved.get(key)
    if want is None:
      raise CorruptCheckpointError(f"{where}: array {key!r} has no recorded checksum")
    if want["crc32"] is not None and rec["crc32"] is not None and want["crc32"] != rec["crc32"]:
      raise CorruptCheckpointError(
          f"{where}: array {key!r} {tuple(rec['shape'])} fails its checksum (crc32 "
          f"{rec['crc32']:#010x}, saved {want['crc32']:#010x}): the files under {where} were "
          f"changed after the save")


def _describe(e: BaseException) -> str:
  """One line for a read error: TensorStore's own message (which names the array and file)."""
  chain, seen = [], set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    chain.append(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    e = e.__cause__ or e.__context__
  best = next((m for m in chain if "Error reading" in m or "No such file" in m), chain[0])
  return best[:500]


def _is_disk_full(e: BaseException) -> bool:
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False

class Checkpointer:
  """``ocp.CheckpointManager`` with items ``state``, ``data`` and ``checksums``."""

  def __init__(self, workdir: str, max_to_keep: int = 3):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self._mngr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        item_names=("state", "data", "checksums"))
    self._failed_save = None
    self._last_save = None  # step of the newest save() call (async: maybe still writing)

  def latest_step(self) -> Optional[int]:
    return self._mngr.latest_step()

  def _disk_full(self, step: int, e: BaseException) -> DiskFullError:
    self._failed_save = step
    try:
      self._mngr.reload()  # forget the step orbax may still list
    except Exception:  # pylint: disable=broad-except
      pass
    latest = self._mngr.latest_step()
    kept = (f"the previous checkpoint (step {latest}) is intact. Free space (or lower "
            f"keep_checkpoints) and rerun the same command to resume from it"
            if latest is not None else "no earlier checkpoint exists. Free space and rerun")
    return DiskFullError(
        errno.ENOSPC, f"disk full while saving the checkpoint of step {step} in "
        f"{self.directory}; {kept}. Cause: {e}")

  def save(self, step: int, state: Any, data_state: dict, force: bool = False) -> None:
    checksums = {"arrays": tree_checksums(state), "data_crc32": _json_crc(data_state)}
    previous, self._last_save = self._last_save, step
    try:
      self._mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state),
                                                    checksums=ocp.args.JsonSave(checksums)),
                      force=force)
    except Exception as e:  # orbax raises async errors of the previous save here too
      if _is_disk_full(e):  # the failed write may be the previous (async) save's
        failed = previous if previous is not None and self._mngr.latest_step() != previous else step
        raise self._disk_full(failed, e) from e
      raise

  def _has_checksums(self, step: int) -> bool:
    return os.path.isdir(os.path.join(self.directory, str(step), "checksums"))

  def _restore_step(self, step: int, abstract_state: Any) -> Tuple[Any, dict]:
    where = os.path.join(self.directory, str(step))
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, abstract_state)
    if not self._has_checksums(step):  # written before checksums existed
      warnings.warn(f"checkpoint {where} has no checksums (older format): restored unverified",
                    CheckpointFallbackWarning)
      try:
        restored = self._mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
      except (ValueError, KeyError) as e:
        raise IncompatibleWorkdirError(
            f"checkpoint at step {step} in {self.directory} does not fit this model: {e}") from e
      return restored["state"], restored["data"]
    try:
      saved = self._mngr.restore(step, args=ocp.args.Composite(
          checksums=ocp.args.JsonRestore()))["checksums"]
      saved_arrays = saved["arrays"]
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(f"{where}/checksums: unreadable ({_describe(e)})") from e
    want = {k: (tuple(v["shape"]), v["dtype"]) for k, v in saved_arrays.items()}
    have = {_path_str(p): (tuple(x.shape), str(x.dtype))
            for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
    if want != have:
      differ = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
      details = "; ".join(f"{k}: saved {want.get(k, '<absent>')}, model {have.get(k, '<absent>')}"
                          for k in differ[:5])
      raise IncompatibleWorkdirError(
          f"checkpoint at step {step} in {self.directory} does not fit this model "
          f"({len(differ)} arrays differ: {details})")
    try:
      restored = self._mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(target), data=ocp.args.JsonRestore()))
    except Exception as e:  # pylint: disable=broad-except
      raise CorruptCheckpointError(
          f"{where}: cannot be read ({_describe(e)})") from e
    _verify(saved_arrays, tree_checksums(restored["state"]), where)
    if _json_crc(restored["data"]) != saved["data_crc32"]:
      raise CorruptCheckpointError(f"{where}/data: the data iterator state fails its checksum")
    return restored["state"], restored["data"]

  def restore(self, abstract_state: Any, step: Optional[int] = None) -> Tuple[Any, dict]:
    """Restores onto the shapes, dtypes and shardings of ``abstract_state``, verified.

    Without ``step``, a corrupt newest checkpoint is skipped (warning) for the
    newest intact one; the skipped ones move to ``workdir/corrupt_checkpoints``.
    """
    candidates = ([step] if step is not None
                  else sorted(self._mngr.all_steps(), reverse=True))
    failures: List[Tuple[int, str]] = []
    for s in candidates:
      try:
        state, data = self._restore_step(s, abstract_state)
      except CorruptCheckpointError as e:
        logging.error("corrupt checkpoint: %s", e)
        failures.append((s, str(e)))
        continue
      if failures:
        self._quarantine([f for f, _ in failures])
        msg = (f"CORRUPT CHECKPOINT(S) {[f for f, _ in failures]} in {self.directory} "
               f"({'; '.join(m for _, m in failures)}). Resumed from the newest intact "
               f"checkpoint, step {s}, instead; the corrupt ones were moved to "
               f"{os.path.join(self.workdir, 'corrupt_checkpoints')}.")
        logging.warning("%s", msg)
        warnings.warn(msg, CheckpointFallbackWarning)
      return state, data
    raise CorruptCheckpointError(
        f"no intact checkpoint in {self.directory}: "
        + "; ".join(m for _, m in failures)
        + ". Restore the files from a backup, or delete the checkpoints to train from scratch.")

  def _quarantine(self, steps: List[int]) -> None:
    """Moves corrupt step directories aside so the resumed run can write those steps again."""
    if jax.process_index() == 0:
      dest = os.path.join(self.workdir, "corrupt_checkpoints")
      os.makedirs(dest, exist_ok=True)
      for s in steps:
        target = os.path.join(dest, str(s))
        n = 1
        while os.path.exists(target):
          target, n = os.path.join(dest, f"{s}.{n}"), n + 1
        shutil.move(os.path.join(self.directory, str(s)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices("mtl_jax_quarantine_checkpoints")
    self._mngr.reload()

  def wait(self) -> None:
    try:
      self._mngr.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      if _is_disk_full(e):
        raise self._disk_full(self._last_save, e) from e
      raise

  def close(self) -> None:
    """Waits for the last save; after a failed save only logs, so the first error stays on top."""
    try:
      self.wait()
    except Exception:  # pylint: disable=broad-except
      if self._failed_save is None:
        raise
      logging.exception("checkpoint save failed again while closing")
    finally:
      try:
        self._mngr.close()
      except Exception:  # pylint: disable=broad-except
        if self._failed_save is None:
          raise


def _read_checksums(directory: str, step: int) -> Optional[Dict[str, dict]]:
  path = os.path.join(directory, str(step), "checksums")
  if not os.path.isdir(path):
    return None
  where = os.path.join(directory, str(step))
  try:
    with ocp.Checkpointer(ocp.JsonCheckpointHandler()) as ckptr:
      return ckptr.restore(path, args=ocp.args.JsonRestore())["arrays"]
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptCheckpointError(f"{where}/checksums: unreadable ({_describe(e)})") from e


def _load_state_step(directory: str, step: int, only: Optional[str] = None):
  """The saved state (or its ``only`` entry, e.g. "params") as NumPy, checksums verified."""
  where = os.path.join(directory, str(step))
  saved = _read_checksums(directory, step)
  path = os.path.join(where, "state")
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      tree = ckptr.metadata(path).item_metadata.tree
      args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
      state = ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptCheckpointError(f"{where}: cannot be read ({_describe(e)})") from e
  if saved is not None:
    _verify(saved, tree_checksums(state), where)
  return state if only is None else {only: state[only]}


def _load_params_step(directory: str, step: int):
  return _load_state_step(directory, step, "params")["params"]


def load_params_numpy(workdir: str, step: Optional[int] = None):
  """The params of a run's checkpoint (latest intact by default) as host NumPy arrays.

  Saved shardings are ignored, so a checkpoint written on 8 devices or by
  several processes loads in a 1-device process (for transfer, tests, tools).
  Checksums are verified; without ``step`` a corrupt newest checkpoint is
  skipped for the newest intact one, with a warning.
  """
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints in {directory}")
  mngr = ocp.CheckpointManager(directory, item_names=("state", "data", "checksums"))
  steps = sorted(mngr.all_steps())
  mngr.close()
  if step is not None and step not in steps:
    raise FileNotFoundError(f"checkpoint step {step} not in {directory} (has {steps})")
  if not steps:
    raise FileNotFoundError(f"checkpoint step {step} not in {directory} (has {steps})")
  failures = []
  for s in ([step] if step is not None else steps[::-1]):
    try:
      params = _load_params_step(directory, s)
    except CorruptCheckpointError as e:
      failures.append(str(e))
      continue
    if failures:
      msg = (f"CORRUPT CHECKPOINT(S) in {directory} ({'; '.join(failures)}); loaded the params "
             f"of the newest intact checkpoint, step {s}, instead")
      logging.warning("%s", msg)
      warnings.warn(msg, CheckpointFallbackWarning)
    return params
  raise CorruptCheckpointError(f"no intact checkpoint in {directory}: " + "; ".join(failures))


def load_state_numpy(workdir: str, step: int):
  """The whole saved train state of checkpoint ``step`` (params, opt_state, weighting, ...),
  verified, as a nested dict of host NumPy arrays (for tests and tools)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  return _load_state_step(directory, step)
