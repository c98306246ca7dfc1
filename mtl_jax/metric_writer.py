"""Run outputs: ``metrics.jsonl``, TensorBoard events, progress bar, results table."""

import json
import math
import os
from typing import Dict, Mapping, Optional

import numpy as np
import tqdm


class MetricWriter:
  """Writes scalars to ``workdir/metrics.jsonl`` (one line per call) and TensorBoard.

  Only the main process writes; other processes get a no-op writer.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    from tensorboardX import SummaryWriter  # no TensorFlow needed
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **clean}) + "\n")
    self._jsonl.flush()
    for k, v in clean.items():
      if math.isfinite(v):
        self._tb.add_scalar(k, v, int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def progress_bar(total: int, initial: int, enabled: bool):
  """A tqdm bar showing steps/s and ETA (disabled off the main process or by config)."""
  return tqdm.tqdm(total=total, initial=initial, disable=not enabled, unit="step",
                   dynamic_ncols=True, mininterval=1.0)


def results_table(results: Dict[str, Dict[str, Dict[str, float]]]) -> str:
  """Formats {split: {task: {metric: value}}} as a Markdown table, one row per (split, task)."""
  metrics = []
  for per_task in results.values():
    for vals in per_task.values():
      metrics += [m for m in vals if m not in metrics]
  header = "| split | task | " + " | ".join(metrics) + " |"
  lines = [header, "|" + "---|" * (len(metrics) + 2)]
  for split, per_task in results.items():
    for task, vals in per_task.items():
      cells = []
      for m in metrics:
        v = vals.get(m)
        cells.append("" if v is None else (f"{int(v)}" if m == "count" else f"{v:.4f}"))
      lines.append(f"| {split} | {task} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def to_jsonable(tree):
  if isinstance(tree, dict):
    return {k: to_jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (np.floating, np.integer)):
    return tree.item()
  return tree
