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
import math
import os
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from mtl_jax import train


def read_results(path: str) -> List[dict]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def run_grid(study_dir: str, make_config: Callable[[str, int], object],
             cells: Sequence[str], seeds: Iterable[int], log: Callable[[str], None] = print) -> str:
  """Runs every (cell, seed) not yet in ``study_dir/results.jsonl``; returns that path."""
  path = os.path.join(study_dir, "results.jsonl")
  done = {(r["cell"], r["seed"]) for r in read_results(path)}
  seeds = list(seeds)
  for cell in cells:
    for seed in seeds:
      if (cell, seed) in done:
        continue
      config = make_config(cell, seed)
      config.progress_bar = False
      workdir = os.path.join(study_dir, "runs", cell.replace("/", "_"), f"seed_{seed}")
      t0 = time.time()
      results = train.train_and_evaluate(config, workdir)
      row = {"cell": cell, "seed": seed, "seconds": round(time.time() - t0, 2), **results}
      with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
      log(f"{cell} seed {seed}: {time.time() - t0:.1f}s")
  return path


def mean_se(values: Sequence[float]) -> Tuple[float, float, int]:
  """Mean, standard error of the mean (ddof=1; NaN for one value) and count."""
  v = np.asarray([x for x in values if x is not None and math.isfinite(x)], np.float64)
  if len(v) == 0:
    return float("nan"), float("nan"), 0
  se = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
  return float(v.mean()), se, len(v)


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
