"""Eval metrics of a (replicated) model over a whole split, and their mean ± s.e. over replicas.

With several datasets (``config.datasets``) each is evaluated on its own
split, for the tasks it labels (``evaluate_sources``).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import jax
import numpy as np
from absl import logging

from mtl_jax import kinds, metrics, parallel
from mtl_jax.data.base import ArrayDataset
from mtl_jax.data.pipeline import eval_batches
from mtl_jax.kinds.base import add_sums
from mtl_jax.models import outputs_by_task
from mtl_jax.models.heads import concat_batches
from mtl_jax.replicas import Replicas

Results = Dict[str, Dict[str, float]]


def evaluate(eval_fn, params, dataset: ArrayDataset, specs, groups, batch_size: int, mesh,
             replicas: Optional[Replicas] = None) -> Tuple[Results, List[Results]]:
  """({task: {metric: value}} averaged over replicas, the per-replica list).

  Metrics are computed once over every labelled example of ``dataset``. A
  streaming split is read batch by batch; only the model outputs and the
  labels and masks are kept (the inputs never are). Tasks whose kind
  ``streams_metrics`` (per-pixel, vocabulary-sized outputs) keep not even
  the outputs: each batch's metric sums are added up (mtl_jax/kinds/base.py).
  """
  replicas = replicas or Replicas(1, 0)
  streamed = [g for g in groups if kinds.get(g.kind).streams_metrics]
  kept_groups = [g for g in groups if g not in streamed]
  stream_specs = [s for s in specs if any(s.name in g.names for g in streamed)]
  sums = [{s.name: None for s in stream_specs} for _ in range(replicas.num)]
  chunks = []
  in_memory = isinstance(dataset, ArrayDataset)
  targets = []
  n = len(dataset)
  batches = eval_batches(dataset, batch_size, jax.process_index(), jax.process_count())
  for start, batch in zip(range(0, n, batch_size), batches):
    out = parallel.fetch(eval_fn(params, parallel.shard_batch(batch["inputs"], mesh)))
    chunks.append({g.key: out[g.key] for g in kept_groups})
    if not in_memory and kept_groups:  # this process's rows; gathered whole below
      targets.append({"labels": batch["labels"], "mask": batch["mask"]})
    if stream_specs:
      rows = min(batch_size, n - start)
      labels, mask = _batch_targets(dataset, batch, start, rows, in_memory)
      trimmed = concat_batches(streamed, [out], rows)  # padding rows dropped
      for r, outputs in enumerate(replicas.unstack(trimmed)):
        per_task = outputs_by_task(streamed, outputs)
        for s in stream_specs:
          sums[r][s.name] = add_sums(sums[r][s.name], s.task_kind.labelled_sums(
              s, per_task[s.name], labels[s.name], mask[s.name]))
  per_replica = [{s.name: s.task_kind.metrics_of_sums(s, sums[r][s.name]) for s in stream_specs}
                 for r in range(replicas.num)]
  batch_specs = [s for s in specs if s not in stream_specs]
  if batch_specs:
    if in_memory:
      labels, mask = dataset.labels, dataset.mask
    else:
      t = jax.tree.map(lambda *xs: np.concatenate(xs), *targets)
      if jax.process_count() > 1:  # every process's slice of each batch, in batch order
        from jax.experimental import multihost_utils
        t = multihost_utils.process_allgather(
            jax.tree.map(lambda x: x.reshape(-1, batch_size // jax.process_count(),
                                             *x.shape[1:]), t))
        t = jax.tree.map(lambda x: np.swapaxes(x, 0, 1).reshape(-1, *x.shape[3:]), t)
      labels = {k: v[:n] for k, v in t["labels"].items()}
      mask = {k: v[:n] for k, v in t["mask"].items()}
    stacked = concat_batches(kept_groups, chunks, n)  # padding rows dropped
    for r, outputs in enumerate(replicas.unstack(stacked)):
      per_task = outputs_by_task(kept_groups, outputs)
      per_replica[r].update({s.name: metrics.task_metrics(s, per_task[s.name], labels[s.name],
                                                          mask[s.name]) for s in batch_specs})
  per_replica = [{s.name: r[s.name] for s in specs} for r in per_replica]  # the specs' order
  return aggregate_replicas(per_replica), per_replica


def _batch_targets(dataset, batch, start: int, rows: int, in_memory: bool):
  """Labels and masks of the ``rows`` real examples of the eval batch at ``start``, global."""
  if in_memory:
    sl = slice(start, start + rows)
    return ({k: v[sl] for k, v in dataset.labels.items()},
            {k: v[sl] for k, v in dataset.mask.items()})
  t = {"labels": batch["labels"], "mask": batch["mask"]}
  if jax.process_count() > 1:  # each process holds a contiguous slice of the global batch
    from jax.experimental import multihost_utils
    t = multihost_utils.process_allgather(t, tiled=True)
  return ({k: v[:rows] for k, v in t["labels"].items()},
          {k: v[:rows] for k, v in t["mask"].items()})


def result_key(task: str, alias: str, labelled_by: int) -> str:
  """A task labelled by one dataset keeps its name; else ``task@alias`` per dataset."""
  return task if labelled_by == 1 else f"{task}@{alias}"


def evaluate_sources(eval_fn, params, sources: Sequence, split: str, specs, groups,
                     batch_size: int, mesh, replicas: Optional[Replicas] = None
                     ) -> Tuple[Results, List[Results]]:
  """Like ``evaluate``, per dataset on its own ``split``, each task on the dataset(s)
  labelling it (keys from ``result_key``); datasets without ``split`` are skipped.

  One dataset gives exactly ``evaluate``'s result.
  """
  count = {s.name: sum(s.name in src.tasks for src in sources) for s in specs}
  merged_reps = None
  for src in sources:
    ds = src.splits.get(split)
    if ds is None:
      continue
    own = [s for s in specs if s.name in src.tasks]
    _, reps = evaluate(eval_fn, params, ds, own, groups, batch_size, mesh, replicas)
    reps = [{result_key(t, src.alias, count[t]): v for t, v in r.items()} for r in reps]
    merged_reps = reps if merged_reps is None else [{**a, **b} for a, b in zip(merged_reps, reps)]
  if merged_reps is None:
    raise ValueError(f"no dataset has a {split!r} split")
  order = [result_key(s.name, src.alias, count[s.name]) for s in specs for src in sources
           if s.name in src.tasks and split in src.splits]
  merged_reps = [{k: r[k] for k in order} for r in merged_reps]
  return aggregate_replicas(merged_reps), merged_reps


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
