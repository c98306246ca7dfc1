"""The training loop: ``train_and_evaluate(config, workdir)``. Nothing model-specific.

Everything the loop iterates is built by ``mtl_jax.run.setup`` (see
docs/run_path.md for the path a config takes); this file only steps, logs,
evaluates, checkpoints and reports.
"""

import json
import os
import signal
import time
from typing import Any, Dict

import jax
import numpy as np

from mtl_jax import config_keys, metric_writer, metrics
from mtl_jax.checkpoint import load_params_numpy
from mtl_jax.evaluation import evaluate_sources
from mtl_jax.run import setup


class NonFiniteLossError(FloatingPointError):
  """A task loss became NaN or inf; training stopped before saving it."""


class TrainingPreempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can be resumed."""


def _check_finite(pending, specs, checkpointer) -> None:
  """Raises NonFiniteLossError naming the first bad step and task(s)."""
  if not pending:
    return
  values = jax.device_get([m["task_loss"] for _, m in pending])
  for (step, _), task_loss in zip(pending, values):
    task_loss = np.asarray(task_loss).reshape(-1, len(specs))  # [replicas, T]
    bad_rows = np.flatnonzero(~np.isfinite(task_loss).all(1))
    if len(bad_rows):
      bad = [s.name for s, v in zip(specs, task_loss[bad_rows[0]]) if not np.isfinite(v)]
      where = f" (replica {bad_rows[0]})" if len(task_loss) > 1 else ""
      raise NonFiniteLossError(
          f"non-finite loss in task(s) {bad} at step {step}{where}; training stopped. The last "
          f"good checkpoint (step {checkpointer.latest_step()}) in {checkpointer.directory} "
          f"is kept. Lower the learning rate or check the data of these tasks.")


def _summarize(pending, specs, replicas) -> Dict[str, float]:
  values = jax.device_get([m for _, m in pending])
  if replicas.stacked:  # report the mean over replicas
    values = [jax.tree.map(lambda x: np.mean(x, axis=0), v) for v in values]
  out = {"train/loss": float(np.mean([v["loss"] for v in values])),
         "train/grad_norm": float(np.mean([v["grad_norm"] for v in values])),
         "train/param_norm": float(values[-1]["param_norm"]),
         "train/regularizer": float(np.mean([v["regularizer"] for v in values]))}
  task_loss = np.stack([v["task_loss"] for v in values])
  labelled = np.stack([v["labelled"] for v in values])
  for i, s in enumerate(specs):
    # Average over steps that had labelled examples of this task.
    has = labelled[:, i] > 0
    out[f"train/{s.name}/loss"] = float(task_loss[has, i].mean()) if has.any() else float("nan")
  # Weighting diagnostics, averaged over the interval: per-task weights and
  # gradient norms, and pairwise gradient cosines (all pairs up to 8 tasks,
  # else their min and mean) so that conflict is visible.
  for key in ("task_weight", "task_grad_norm"):
    if key in values[0]:
      mean = np.mean([v[key] for v in values], axis=0)
      for i, s in enumerate(specs):
        out[f"train/{s.name}/{key[len('task_'):]}"] = float(mean[i])
  if "task_grad_cosine" in values[0]:
    cos = np.mean([v["task_grad_cosine"] for v in values], axis=0)
    iu = np.triu_indices(len(specs), 1)
    if len(specs) <= 8:
      for a, b in zip(*iu):
        out[f"train/grad_cosine/{specs[a].name}__{specs[b].name}"] = float(cos[a, b])
    if len(iu[0]):
      out["train/grad_cosine/min"] = float(cos[iu].min())
      out["train/grad_cosine/mean"] = float(cos[iu].mean())
  return out


def _delta_m_args(delta_m, specs):
  """(baseline, specs, metrics, average) for ``metrics.results_delta_m``; None without
  ``config.delta_m``. Reads and checks the baseline up front (missing file, tasks, metrics)."""
  if not delta_m:
    return None
  dm = delta_m.to_dict() if hasattr(delta_m, "to_dict") else dict(delta_m)
  base = metrics.read_baseline(dm["baseline"])
  chosen = metrics.delta_m_metrics(specs, dm.get("metrics"))
  for split, per_task in base.items():
    missing = sorted({f"{t}/{m}" for t, ms in chosen.items() for m in ms
                      if m not in per_task.get(t, {})})
    if missing:
      raise ValueError(f"config.delta_m.baseline ({'every split' if split == '*' else split}) "
                       f"lacks {missing}")
  return base, specs, dm.get("metrics"), dm.get("average", "metrics")


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  Returns {"validation": {task: {metric: value}}, "test": {...}} (with
  ``config.delta_m`` also ``"delta_m": {split: Δm%}``) and writes it to
  ``workdir/results.json``.
  """
  run = setup(config, workdir)
  config, program, mesh, checkpointer = run.config, run.program, run.mesh, run.checkpointer
  specs, groups, replicas = program.specs, program.groups, program.replicas
  cfg = lambda k: config_keys.get(config, k)  # noqa: E731
  is_main = jax.process_index() == 0
  num_steps, start, state = int(config.num_train_steps), run.start_step, program.state
  delta_m_args = _delta_m_args(cfg("delta_m"), specs)  # checked before training, not after

  def run_eval(split):
    return evaluate_sources(run.eval_fn, state.params, run.sources, split, specs, groups,
                            cfg("eval_batch_size"), mesh, replicas)

  writer = metric_writer.MetricWriter(workdir, enabled=is_main)
  bar = metric_writer.progress_bar(num_steps, start, enabled=is_main and cfg("progress_bar"))

  preempted = []
  previous_handler = None
  try:
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
  except ValueError:  # not the main thread
    pass

  def every(n, step):
    return n and step % n == 0

  pending, t0 = [], time.perf_counter()
  try:
    for step in range(start, num_steps):
      state, step_metrics = run.train_step(state, run.feed.next(mesh))
      pending.append((step, step_metrics))
      done = step + 1
      bar.update(1)
      last = done == num_steps
      if every(cfg("log_every_steps"), done) or last or preempted:
        _check_finite(pending, specs, checkpointer)
        summary = _summarize(pending, specs, replicas)
        summary["train/steps_per_sec"] = len(pending) / (time.perf_counter() - t0)
        summary.update(run.feed.stats())  # examples seen and epochs per dataset
        writer.write(done, summary)
        bar.set_postfix(loss=f"{summary['train/loss']:.4f}")
        pending, t0 = [], time.perf_counter()
      if every(cfg("eval_every_steps"), done) and not last:
        res, _ = run_eval("validation")
        writer.write(done, {f"validation/{t}/{m}": v for t, r in res.items() for m, v in r.items()})
      if every(cfg("checkpoint_every_steps"), done) or last or preempted:
        _check_finite(pending, specs, checkpointer)
        checkpointer.save(done, state, run.feed.get_state(), force=bool(preempted))
      if preempted:
        checkpointer.wait()
        raise TrainingPreempted(f"SIGTERM at step {done}: checkpoint saved in "
                                f"{checkpointer.directory}; rerun the same command to resume")
    checkpointer.wait()
    results, per_replica = {}, {}
    for split in ("validation", "test"):
      if any(split in src.splits for src in run.sources):
        results[split], per_replica[split] = run_eval(split)
    writer.write(num_steps, {f"{split}/{t}/{m}": v for split, r in results.items()
                             for t, mm in r.items() for m, v in mm.items()})
  finally:
    run.feed.close()
    bar.close()
    writer.close()
    checkpointer.close()
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)

  if replicas.stacked:
    results["replicas"] = [{"seed": seed, **{split: per_replica[split][r] for split in per_replica}}
                           for r, seed in enumerate(replicas.seeds)]
  if delta_m_args:  # Δm% vs the baseline, of the mean and of each replica
    args = delta_m_args
    for row in results.get("replicas", []):
      row["delta_m"] = metrics.results_delta_m({k: row[k] for k in per_replica}, *args)
    results["delta_m"] = metrics.results_delta_m({k: results[k] for k in per_replica}, *args)
  results = metric_writer.to_jsonable(results)
  if is_main:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    print(metric_writer.results_table({k: v for k, v in results.items()
                                       if k not in ("replicas", "delta_m")}), flush=True)
    for split, v in results.get("delta_m", {}).items():
      print(f"Δm% ({split}, vs config.delta_m.baseline): {v:+.2f}", flush=True)
  return results


def final_params(workdir: str):
  """The parameters of the latest checkpoint in ``workdir`` as NumPy (for tests and tools)."""
  return load_params_numpy(workdir)
