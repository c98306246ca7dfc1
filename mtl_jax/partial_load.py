"""Load a pretrained trunk (or any regex-selected part) into a new model.

``config.init_from = dict(workdir=..., step=None, load=".*", skip="heads/.*")``:
parameters of the new model whose path fully matches ``load`` and not
``skip`` are copied from the checkpoint; the rest keep their fresh init.
A selected parameter that is absent from the checkpoint or has another
shape is an error that lists every such path with both shapes. Checkpoint
parameters the new model lacks (e.g. upper blocks dropped by truncation) are
reported as unused, not an error.

``heads={target task: source task}`` (MT-DNN's per-task fine-tuning from the
multi-task model) copies one row of the source's stacked head into the
target task's row: tasks with equal (kind, num_outputs) are one stacked
tensor ``heads/<kind>_<n>`` (row t = task t), so a regex cannot pick one
task's head. Source rows are found from the source workdir's config.json
(its tasks, grouped as the model groups them); every head layer (hidden
towers too) is copied, bitwise. A source or target task that does not exist
and a row of another shape are errors naming them.
"""

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mtl_jax import paths
from mtl_jax.checkpoint import load_params_numpy

INIT_FROM_KEYS = ("workdir", "step", "load", "skip", "heads")


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
  for key in ("loaded", "fresh", "unused", "head_rows"):
    if key not in report:
      continue
    lines.append(f"{key} ({len(report[key])}):")
    lines += [f"  {p}" for p in report[key]]
  return "\n".join(lines)


def head_rows(groups) -> Dict[str, Tuple[str, int]]:
  """{task: (group key, row)}: where each task's head lives in the stacked tensors."""
  return {name: (g.key, t) for g in groups for t, name in enumerate(g.names)}


def source_groups(workdir: str):
  """The task groups of the run in ``workdir``, from its config.json."""
  from mtl_jax import tasks as tasks_lib
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"init_from.heads: {path} does not exist, so the source's tasks (and "
                            f"which row of a stacked head is which task) are unknown; heads load "
                            f"from an mtl_jax workdir")
  with open(path) as f:
    tasks_cfg = json.load(f).get("tasks") or []
  return tasks_lib.group_tasks(tasks_lib.specs_from_config(tasks_cfg))


def load_head_rows(params, loaded: Dict[str, np.ndarray], heads: Dict[str, str], groups,
                   src_groups, stacked: bool = False) -> Tuple[Any, List[str]]:
  """``params`` with row ``heads[t]`` of the source heads copied into task t's row.

  ``groups``/``src_groups``: the target model's and the source's TaskGroups.
  ``stacked``: params carry a leading replica axis (each replica gets the row).
  Returns (params, report lines "heads/<g>/kernel[row] <- heads/<g'>/kernel[row']").
  """
  target, source = head_rows(groups), head_rows(src_groups)
  unknown = [t for t in heads if t not in target]
  if unknown:
    raise ValueError(f"init_from.heads: target tasks {unknown} are not tasks of this model; "
                     f"its tasks: {sorted(target)}")
  missing = sorted({s for s in heads.values() if s not in source})
  if missing:
    raise ValueError(f"init_from.heads: source tasks {missing} are not in the checkpoint's "
                     f"config; it has tasks {sorted(source)}")
  flat = paths.flatten(params)
  out, report, problems = dict(flat), [], []
  for t, s in heads.items():
    (tg, tr), (sg, sr) = target[t], source[s]
    layers = [p for p in flat
              if p.startswith(f"heads/{tg}/") or p.startswith(f"heads/{tg}_hidden_")]
    for p in sorted(layers):
      src = f"heads/{sg}" + p[len(f"heads/{tg}"):]
      value = flat[p]
      row_shape = tuple(value.shape[2:] if stacked else value.shape[1:])
      if src not in loaded:
        problems.append(f"{t} <- {s}: {p}: the checkpoint has no {src}")
        continue
      got = tuple(loaded[src].shape[1:])
      if got != row_shape:
        problems.append(f"{t} <- {s}: {p} row {row_shape}, checkpoint {src} row {got}")
        continue
      row = jnp.asarray(loaded[src][sr], dtype=value.dtype)
      out[p] = out[p].at[:, tr].set(row) if stacked else out[p].at[tr].set(row)
      report.append(f"{p}[{tr}] <- {src}[{sr}] ({t} <- {s})")
  if problems:
    raise CheckpointMismatchError("init_from.heads: these heads do not fit the checkpoint:\n  "
                                  + "\n  ".join(problems))
  return paths.unflatten(out), report


def apply_init_from(init_config, params, replicas, verbose: bool = False, groups=None):
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
  heads = dict(init_config.get("heads") or {})
  if heads:
    from mtl_jax.pretrained import hf_bert
    if hf_bert.is_hf_dir(init_config["workdir"]):
      raise ValueError(f"init_from.heads: {init_config['workdir']} is a Hugging Face encoder "
                       f"checkpoint, which has no task heads")
    if groups is None:
      raise ValueError("init_from.heads needs the model's task groups")
    twice = [p for p in report["loaded"] if p.startswith("heads/")]
    if twice:
      raise ValueError(f"init_from.load selects head parameters {twice} that init_from.heads "
                       f"loads row by row; narrow load (e.g. 'trunk/.*')")
    merged, rows = load_head_rows(merged, loaded, heads, groups,
                                  source_groups(init_config["workdir"]), replicas.stacked)
    report["head_rows"] = rows
  logging.info("init_from %s:\n%s", init_config["workdir"], format_report(report))
  if verbose:
    print(f"init_from {init_config['workdir']}: loaded {len(report['loaded'])}, newly "
          f"initialised {len(report['fresh'])} {report['fresh']}, unused from checkpoint "
          f"{len(report['unused'])} {report['unused']}"
          + (f", head rows {report['head_rows']}" if "head_rows" in report else ""), flush=True)
  return merged
