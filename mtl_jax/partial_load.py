"""Load a pretrained trunk (or any regex-selected part) into a new model.

``config.init_from = dict(workdir=..., step=None, load=".*", skip="heads/.*")``:
parameters of the new model whose path fully matches ``load`` and not
``skip`` are copied from the checkpoint; the rest keep their fresh init.
A selected parameter that is absent from the checkpoint or has another
shape is an error that lists every such path with both shapes. Checkpoint
parameters the new model lacks (e.g. upper blocks dropped by truncation) are
reported as unused, not an error.
"""

import re
from typing import Any, Dict, List, Optional, Tuple

import jax
import numpy as np
from flax import traverse_util

from mtl_jax.checkpoint import load_params_numpy


class CheckpointMismatchError(ValueError):
  """Selected parameters do not fit the checkpoint."""


def _flat(tree) -> Dict[str, Any]:
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def _unflat(flat: Dict[str, Any]):
  return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})


def load_checkpoint_params(workdir: str, step: Optional[int] = None) -> Dict[str, np.ndarray]:
  """The params of a run's checkpoint (latest by default), as a flat {path: array} dict.

  A Hugging Face BERT directory (config.json + model.safetensors) reads as
  ``{"trunk": ...}`` params, so ``init_from=dict(workdir=<dir>, load="trunk/.*")`` works.
  """
  from mtl_jax.pretrained import hf_bert
  if hf_bert.is_hf_dir(workdir):
    return {k: np.asarray(v) for k, v in _flat(hf_bert.load_trunk_params(workdir)).items()}
  try:
    params = load_params_numpy(workdir, step)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init_from: {e}") from None
  return {k: np.asarray(v) for k, v in _flat(params).items()}


def merge_params(fresh, loaded: Dict[str, np.ndarray], load: str = ".*",
                 skip: Optional[str] = None) -> Tuple[Any, Dict[str, List[str]]]:
  """Returns (params, report) with report keys loaded / fresh / unused.

  Leaves keep the dtype of ``fresh``; selected leaves must match shapes exactly.
  """
  load_re = re.compile(load)
  skip_re = re.compile(skip) if skip else None
  flat = _flat(fresh)
  out, report, problems = {}, {"loaded": [], "fresh": [], "unused": []}, []
  for path, value in flat.items():
    selected = load_re.fullmatch(path) and not (skip_re and skip_re.fullmatch(path))
    if not selected:
      out[path] = value
      report["fresh"].append(path)
    elif path not in loaded:
      problems.append(f"{path}: model {tuple(value.shape)}, checkpoint <absent>")
    elif tuple(loaded[path].shape) != tuple(value.shape):
      problems.append(f"{path}: model {tuple(value.shape)}, checkpoint {tuple(loaded[path].shape)}")
    else:
      out[path] = jax.numpy.asarray(loaded[path], dtype=value.dtype)
      report["loaded"].append(path)
  if problems:
    raise CheckpointMismatchError(
        "init_from: these selected parameters do not fit the checkpoint (narrow `load` or "
        "add them to `skip`):\n  " + "\n  ".join(problems))
  report["unused"] = sorted(set(loaded) - set(report["loaded"]))
  return _unflat(out), report


def path_mask(tree, paths) -> Any:
  """A bool tree: True at the leaves whose path is in ``paths``."""
  wanted = set(paths)
  return _unflat({k: k in wanted for k in _flat(tree)})


def format_report(report: Dict[str, List[str]]) -> str:
  lines = []
  for key in ("loaded", "fresh", "unused"):
    lines.append(f"{key} ({len(report[key])}):")
    lines += [f"  {p}" for p in report[key]]
  return "\n".join(lines)
