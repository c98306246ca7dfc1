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
import jax.numpy as jnp
import numpy as np
from absl import logging

from mtl_jax import paths
from mtl_jax.checkpoint import load_params_numpy

INIT_FROM_KEYS = ("workdir", "step", "load", "skip")


class CheckpointMismatchError(ValueError):
  """Selected parameters do not fit the checkpoint."""


def load_checkpoint_params(workdir: str, step: Optional[int] = None) -> Dict[str, np.ndarray]:
  """The params of a run's checkpoint (latest by default), as a flat {path: array} dict.

  A Hugging Face BERT directory (config.json + model.safetensors) reads as
  ``{"trunk": ...}`` params, so ``init_from=dict(workdir=<dir>, load="trunk/.*")`` works.
  """
  from mtl_jax.pretrained import hf_bert
  if hf_bert.is_hf_dir(workdir):
    return {k: np.asarray(v) for k, v in paths.flatten(hf_bert.load_trunk_params(workdir)).items()}
  try:
    params = load_params_numpy(workdir, step)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"init_from: {e}") from None
  return {k: np.asarray(v) for k, v in paths.flatten(params).items()}


def merge_params(fresh, loaded: Dict[str, np.ndarray], load: str = ".*",
                 skip: Optional[str] = None) -> Tuple[Any, Dict[str, List[str]]]:
  """Returns (params, report) with report keys loaded / fresh / unused.

  Leaves keep the dtype of ``fresh``; selected leaves must match shapes exactly.
  """
  load_re = re.compile(load)
  skip_re = re.compile(skip) if skip else None
  flat = paths.flatten(fresh)
  # A pattern that selects nothing is a typo, not a request to load nothing.
  paths.require_match(fresh, load, "init_from.load")
  if skip:
    paths.require_match(fresh, skip, "init_from.skip")
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
  return paths.unflatten(out), report


def path_mask(tree, selected) -> Any:
  """A bool tree: True at the leaves whose path is in ``selected``."""
  wanted = set(selected)
  return paths.unflatten({k: k in wanted for k in paths.flatten(tree)})


def format_report(report: Dict[str, List[str]]) -> str:
  lines = []
  for key in ("loaded", "fresh", "unused"):
    lines.append(f"{key} ({len(report[key])}):")
    lines += [f"  {p}" for p in report[key]]
  return "\n".join(lines)


def apply_init_from(init_config, params, replicas, verbose: bool = False):
  """``params`` with ``config.init_from``'s selection loaded (see the module docstring).

  With replicas (a leading replica axis), every replica gets the same
  pretrained leaves and keeps its own fresh ones.
  """
  init_config = dict(init_config)
  unknown = sorted(set(init_config) - set(INIT_FROM_KEYS))
  if unknown:
    raise ValueError(f"init_from: unknown keys {unknown}; valid: {list(INIT_FROM_KEYS)}")
  loaded = load_checkpoint_params(init_config["workdir"], init_config.get("step"))
  merged, report = merge_params(replicas.first(params), loaded, init_config.get("load", ".*"),
                                init_config.get("skip"))
  if replicas.stacked:
    is_loaded = path_mask(merged, report["loaded"])
    merged = jax.tree.map(lambda m, full, hit: jnp.broadcast_to(m, full.shape) if hit else full,
                          merged, params, is_loaded)
  logging.info("init_from %s:\n%s", init_config["workdir"], format_report(report))
  if verbose:
    print(f"init_from {init_config['workdir']}: loaded {len(report['loaded'])}, newly "
          f"initialised {len(report['fresh'])} {report['fresh']}, unused from checkpoint "
          f"{len(report['unused'])} {report['unused']}", flush=True)
  return merged
