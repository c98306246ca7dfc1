"""Eval metrics of a (replicated) model over a whole split, and their mean ± s.e. over replicas."""

from typing import Dict, List, Optional, Tuple

import jax
import numpy as np
from absl import logging

from mtl_jax import metrics, parallel
from mtl_jax.data.base import ArrayDataset
from mtl_jax.data.pipeline import eval_batches
from mtl_jax.models import outputs_by_task
from mtl_jax.replicas import Replicas

Results = Dict[str, Dict[str, float]]


def evaluate(eval_fn, params, dataset: ArrayDataset, specs, groups, batch_size: int, mesh,
             replicas: Optional[Replicas] = None) -> Tuple[Results, List[Results]]:
  """({task: {metric: value}} averaged over replicas, the per-replica list).

  Metrics are computed once over every labelled example of ``dataset``.
  """
  replicas = replicas or Replicas(1, 0)
  chunks = []
  for batch in eval_batches(dataset, batch_size, jax.process_index(), jax.process_count()):
    out = eval_fn(params, parallel.shard_batch(batch["inputs"], mesh))
    chunks.append(parallel.fetch(out))
  n = len(dataset)
  # Outputs are [(replicas,) T_g, batch, ...]: concatenate and trim the batch axis.
  axis = 2 if replicas.stacked else 1
  stacked = {k: np.concatenate([c[k] for c in chunks], axis=axis) for k in chunks[0]}
  stacked = {k: np.take(v, np.arange(n), axis=axis) for k, v in stacked.items()}
  per_replica = []
  for outputs in replicas.unstack(stacked):
    per_task = outputs_by_task(groups, outputs)
    per_replica.append({s.name: metrics.task_metrics(s, per_task[s.name], dataset.labels[s.name],
                                                     dataset.mask[s.name]) for s in specs})
  return aggregate_replicas(per_replica), per_replica


def aggregate_replicas(per_replica: List[Results]) -> Results:
  """{task: {metric: mean}} plus ``<metric>_se`` (standard error over replicas).

  A replica whose metric is not finite (a diverged seed) is left out of that
  mean, loudly: a warning, and ``<metric>_finite`` says how many replicas count.
  """
  if len(per_replica) == 1:
    return per_replica[0]
  out = {}
  for task, task_metrics in per_replica[0].items():
    out[task] = {}
    for m in task_metrics:
      mean, se, n = metrics.mean_se([r[task][m] for r in per_replica])
      out[task][m] = mean
      if m != "count":
        out[task][f"{m}_se"] = se
      if n != len(per_replica):
        bad = [i for i, r in enumerate(per_replica) if not np.isfinite(r[task][m])]
        logging.warning("task %r metric %r is not finite for replicas %s; the mean and s.e. "
                        "are over the other %d", task, m, bad, n)
        out[task][f"{m}_finite"] = n
  return out
