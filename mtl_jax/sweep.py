"""Studies as grids: cells x seeds, run once each, results appended as JSON lines.

A study calls ``run_grid(study_dir, make_config, cells, seeds)``: every
(cell, seed) runs ``train_and_evaluate`` in ``study_dir/runs/<cell>/seed_<s>``
and appends one line to ``study_dir/results.jsonl``; pairs already in the
file are skipped, so an interrupted study resumes by rerunning it. Cells may
depend on earlier ones (e.g. downstream runs on an upstream checkpoint)
because they run in the given order. ``report`` turns the file into
Markdown tables of mean ± standard error over seeds.
"""

import json
import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from mtl_jax import train
from mtl_jax.metrics import mean_se  # noqa: F401  (re-exported for studies)


def read_results(path: str) -> List[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_grid(study_dir: str, make_config: Callable[[str, int], object],
             cells: Sequence[str], seeds: Iterable[int], log: Callable[[str], None] = print,
             vmap_seeds: bool = False) -> str:
  """Runs every (cell, seed) not yet in ``study_dir/results.jsonl``; returns that path.

  With ``vmap_seeds`` a cell's missing seeds (which must be consecutive from
  the first) train as one ``num_seeds`` program; each replica still gets its
  own row.
  """
  path = os.path.join(study_dir, "results.jsonl")
  done = {(r["cell"], r["seed"]) for r in read_results(path)}
  seeds = list(seeds)
  for cell in cells:
    todo = [s for s in seeds if (cell, s) not in done]
    batches = [todo] if vmap_seeds and todo else [[s] for s in todo]
    for batch in batches:
      if batch != list(range(batch[0], batch[0] + len(batch))):
        raise ValueError(f"vmap_seeds needs consecutive seeds, cell {cell!r} misses {batch}")
      config = make_config(cell, batch[0])
      config.progress_bar = False
      if len(batch) > 1:
        config.num_seeds = len(batch)
      name = f"seed_{batch[0]}" if len(batch) == 1 else f"seeds_{batch[0]}-{batch[-1]}"
      workdir = os.path.join(study_dir, "runs", cell.replace("/", "_"), name)
      t0 = time.time()
      results = train.train_and_evaluate(config, workdir)
      seconds = round(time.time() - t0, 2)
      rows = results.pop("replicas", None) or [{"seed": batch[0], **results}]
      with open(path, "a") as f:
        for row in rows:
          f.write(json.dumps({"cell": cell, "seconds": seconds, **row,
                              "config": json.loads(config.to_json())}) + "\n")
      log(f"{cell} seeds {batch}: {seconds:.1f}s")
  return path


def collect(rows: List[dict], split: str, task: str, metric: str) -> Dict[str, List[float]]:
  """{cell: [value per seed]} for one split/task/metric."""
  out: Dict[str, List[float]] = {}
  for r in rows:
    value = r.get(split, {}).get(task, {}).get(metric)
    if value is not None:
      out.setdefault(r["cell"], []).append(value)
  return out


def table(rows: List[dict], split: str, task: str, metric: str, scale: float = 1.0,
          cells: Optional[Sequence[str]] = None, digits: int = 1) -> str:
  """Markdown table: cell | mean ± s.e. | seeds."""
  values = collect(rows, split, task, metric)
  lines = [f"| cell | {split} {task} {metric} | seeds |", "|---|---|---|"]
  for cell in cells or list(values):
    if cell not in values:
      continue
    m, se, n = mean_se([v * scale for v in values[cell]])
    lines.append(f"| {cell} | {m:.{digits}f} ± {se:.{digits}f} | {n} |")
  return "\n".join(lines)


NOTES_MARKER = "<!-- notes -->"


def write_results_md(path: str, generated: str) -> None:
  """Writes a study's generated tables, keeping the hand-written part.

  Everything from the ``<!-- notes -->`` marker on is the study's written
  comparison with the paper: it survives regeneration.
  """
  notes = NOTES_MARKER + "\n"
  if os.path.exists(path):
    with open(path) as f:
      text = f.read()
    if NOTES_MARKER in text:
      notes = text[text.index(NOTES_MARKER):]
  with open(path, "w") as f:
    f.write(generated + notes)
