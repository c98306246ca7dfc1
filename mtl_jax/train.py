"""The training loop: ``train_and_evaluate(config, workdir)``. Nothing model-specific.

Init priority, in one place: a checkpoint in ``workdir`` (resume) >
``config.init_from`` (pretrained parameters, partially loaded) > scratch.
"""

import dataclasses
import json
import os
import signal
import time
from typing import Any, Dict, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from mtl_jax import (config_keys, losses, metric_writer, metrics, optim, parallel, partial_load,
                     regularizers, tasks, transfer)
from mtl_jax.checkpoint import Checkpointer, check_workdir_config, load_params_numpy
from mtl_jax.data import build_dataset
from mtl_jax.data.base import ArrayDataset
from mtl_jax.data.pipeline import TrainIterator, eval_batches
from mtl_jax.models import build_model, outputs_by_task
from mtl_jax.models.sharing import SHARED_PARAMS
from mtl_jax.replicas import Replicas
from mtl_jax.weighting.combine import GradientCombiner


class NonFiniteLossError(FloatingPointError):
  """A task loss became NaN or inf; training stopped before saving it."""


class TrainingPreempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can be resumed."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  # State of the loss-weighting method (e.g. uncertainty log-variances); {} for most.
  weighting: Any = dataclasses.field(default_factory=dict)


def make_train_step(*, model, tx, specs: Sequence[tasks.TaskSpec],
                    groups: Sequence[tasks.TaskGroup], trainable, regularizer=None,
                    combiner: Optional[GradientCombiner] = None, z_shape=None):
  """Returns the pure step ``(state, batch) -> (state, metrics)``.

  ``regularizer`` (optional) maps params to a scalar added to the loss.
  ``combiner`` turns per-task losses into gradients (mtl_jax/weighting/combine.py;
  default: the weighted sum). ``z_shape`` is the shape of the model's shared
  representation, needed by representation-gradient methods.

  Frozen leaves (``trainable`` False) pass through ``stop_gradient``: their
  gradient is a symbolic zero, so XLA never computes their backward pass.
  """
  weights = jnp.asarray([s.weight for s in specs], jnp.float32)

  def freeze(params):
    return jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, trainable)

  def train_step(state: TrainState, batch):
    rng = jax.random.fold_in(state.rng, state.step)
    dropout_rng, weighting_rng = jax.random.split(rng)
    comb = combiner or GradientCombiner(None, len(specs), state.params)

    def loss_terms(params, z):
      params = freeze(params)
      variables = {"params": params}
      if z is not None:
        variables["perturbations"] = {"shared_features": z}
      outputs = model.apply(variables, batch["inputs"], train=True, rngs={"dropout": dropout_rng})
      per_task = losses.task_losses(specs, groups, outputs, batch["labels"], batch["mask"])
      reg = regularizer(params) if regularizer else jnp.zeros((), jnp.float32)
      return per_task, reg

    z0 = jnp.zeros(z_shape, jnp.float32) if z_shape is not None else None
    reg_grad = jax.grad(lambda p: regularizer(freeze(p))) if regularizer else None
    grads, info, step_metrics = comb.grads(loss_terms, state.params, weighting_rng, weights,
                                           state.weighting, z0, reg_grad)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    wstate = state.weighting
    if info is not None:
      new_losses = None
      if comb.loss_method.needs_new_losses:
        new_losses = jax.lax.stop_gradient(loss_terms(params, None)[0] * weights)
      wstate = comb.update_state(state.weighting, info, state.step, weighting_rng, new_losses)
    step_metrics.update(
        labelled=jnp.stack([batch["mask"][s.name].sum() for s in specs]),
        grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params))
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         weighting=wstate), step_metrics

  return train_step


def make_eval_step(model):
  def eval_step(params, inputs):
    return model.apply({"params": params}, inputs, train=False)
  return eval_step


def evaluate(eval_fn, params, dataset: ArrayDataset, specs, groups, batch_size: int,
             mesh, replicas: Optional[Replicas] = None) -> Dict[str, Dict[str, float]]:
  """Metrics per task over every labelled example of ``dataset`` (mean over replicas)."""
  replicas = replicas or Replicas(1, 0)
  chunks = []
  for batch in eval_batches(dataset, batch_size, jax.process_index(), jax.process_count()):
    out = eval_fn(params, parallel.shard_batch(batch["inputs"], mesh))
    chunks.append(parallel.fetch(out))
  n = len(dataset)
  # Outputs are [(replicas,) T_g, batch, n_out]: concatenate and trim the batch axis.
  stacked = {k: np.concatenate([c[k] for c in chunks], axis=-2)[..., :n, :] for k in chunks[0]}
  per_replica = []
  for outputs in replicas.unstack(stacked):
    per_task = outputs_by_task(groups, outputs)
    per_replica.append({s.name: metrics.task_metrics(s, per_task[s.name], dataset.labels[s.name],
                                                     dataset.mask[s.name]) for s in specs})
  return replicas.aggregate(per_replica), per_replica


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


def _summarize(pending, specs, replicas: Replicas) -> Dict[str, float]:
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


def _prepare_data(config, specs):
  data = build_dataset(config.data)
  names = [s.name for s in specs]
  splits = {}
  for split in ("train", "validation", "test"):
    ds = getattr(data, split)
    if ds is None:
      continue
    tasks.validate_batch(specs, ds.labels, ds.mask)
    splits[split] = ds.select_tasks(names)
  return splits


def _shared_feature_shape(model, sample, batch_size: int):
  """Shape of the representation the model exposes with ``perturb("shared_features")``, or None."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((batch_size,) + sample.shape[1:], sample.dtype))
  z = shapes.get("perturbations", {}).get("shared_features")
  return None if z is None else z.shape


def _init_from(init_config, params, mesh, verbose: bool, replicas: Replicas):
  """Partially loads pretrained parameters (see mtl_jax/partial_load.py).

  With replicas, every replica gets the same pretrained leaves and keeps its
  own fresh ones.
  """
  init_config = dict(init_config)
  unknown = sorted(set(init_config) - {"workdir", "step", "load", "skip"})
  if unknown:
    raise ValueError(f"init_from: unknown keys {unknown}; valid: ['workdir', 'step', 'load', 'skip']")
  loaded = partial_load.load_checkpoint_params(init_config["workdir"], init_config.get("step"))
  fresh = replicas.unstack(params)[0] if replicas.stacked else params
  merged, report = partial_load.merge_params(fresh, loaded, init_config.get("load", ".*"),
                                             init_config.get("skip"))
  if replicas.stacked:
    is_loaded = partial_load.path_mask(merged, report["loaded"])
    merged = jax.tree.map(lambda m, full, hit: jnp.broadcast_to(m, full.shape) if hit else full,
                          merged, params, is_loaded)
  params = merged
  logging.info("init_from %s:\n%s", init_config["workdir"], partial_load.format_report(report))
  if verbose:
    print(f"init_from {init_config['workdir']}: loaded {len(report['loaded'])}, newly "
          f"initialised {len(report['fresh'])} {report['fresh']}, unused from checkpoint "
          f"{len(report['unused'])} {report['unused']}", flush=True)
  return jax.device_put(params, parallel.replicated(mesh))


def train_and_evaluate(config, workdir: str) -> Dict[str, Any]:
  """Trains ``config`` in ``workdir`` (resuming if it holds a checkpoint).

  Returns {"validation": {task: {metric: value}}, "test": {...}} and writes it
  to ``workdir/results.json``.
  """
  config_keys.check_config_keys(config)
  is_main = jax.process_index() == 0
  check_workdir_config(workdir, config.to_json(), is_main)
  transfer_plan = transfer.plan(config)
  if transfer_plan:
    config = transfer_plan.config
  cfg = lambda k: config_keys.get(config, k)  # noqa: E731
  specs = tasks.specs_from_config(config.tasks)
  groups = tasks.group_tasks(specs)
  splits = _prepare_data(config, specs)
  if transfer_plan and transfer_plan.cache_trunk:
    splits = transfer.cache_features(splits, transfer_plan.cache_trunk, transfer_plan.upstream)

  mesh = parallel.make_mesh(cfg("num_devices"))
  parallel.check_batch_size(config.batch_size, mesh)
  parallel.check_batch_size(cfg("eval_batch_size"), mesh, "eval_batch_size")
  num_steps = int(config.num_train_steps)
  model = build_model(config.model, groups)

  replicas = Replicas(int(cfg("num_seeds")), int(cfg("seed")))
  sample = splits["train"].inputs[:1]

  def init(key):
    init_rng, state_rng = jax.random.split(key)
    return model.init(init_rng, sample)["params"], state_rng

  params, state_rng = jax.jit(replicas.vmap(init), out_shardings=parallel.replicated(mesh))(
      replicas.keys())
  checkpointer = Checkpointer(workdir, cfg("keep_checkpoints"))
  if cfg("init_from") and checkpointer.latest_step() is None:
    params = _init_from(cfg("init_from"), params, mesh, is_main, replicas)
  one_replica = replicas.unstack(params)[0] if replicas.stacked else params
  tx, labels, group_log = optim.make_optimizer(config.optimizer, cfg("param_groups"),
                                               one_replica, num_steps)
  logging.info("parameter groups:\n%s", "\n".join(group_log))
  trainable = optim.trainable_mask(labels)
  combiner = GradientCombiner(cfg("weighting"), len(specs), one_replica,
                              SHARED_PARAMS.get(config.model.get("sharing", "hard"), "trunk/.*"))
  state = TrainState(
      step=replicas.broadcast(jnp.asarray(0, jnp.int32)), params=params,
      opt_state=jax.jit(replicas.vmap(tx.init), out_shardings=parallel.replicated(mesh))(params),
      rng=state_rng, weighting=replicas.broadcast(combiner.init_state()))
  state = jax.device_put(state, parallel.replicated(mesh))

  train_iters = replicas.iterators(splits["train"], config.batch_size)
  if checkpointer.latest_step() is not None:
    state, data_state = checkpointer.restore(state)
    replicas.set_data_state(train_iters, data_state)
    logging.info("resumed from step %d in %s", replicas.step(state), checkpointer.directory)
  start = replicas.step(state)

  rep, dat = parallel.replicated(mesh), parallel.data_sharding(mesh)
  step_fn = jax.jit(replicas.vmap(make_train_step(model=model, tx=tx, specs=specs, groups=groups,
                                    trainable=trainable,
                                    regularizer=regularizers.build_regularizer(
                                        cfg("regularizers")),
                                    combiner=combiner,
                                    z_shape=_shared_feature_shape(model, sample, config.batch_size))),
                    in_shardings=(rep, replicas.batch_sharding(mesh)), out_shardings=(rep, rep),
                    donate_argnums=0)
  eval_fn = jax.jit(replicas.vmap(make_eval_step(model), in_axes=(0, None)),
                    in_shardings=(rep, dat), out_shardings=rep)
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
      batch = replicas.next_batch(train_iters, mesh)
      state, step_metrics = step_fn(state, batch)
      pending.append((step, step_metrics))
      done = step + 1
      bar.update(1)
      last = done == num_steps
      if every(cfg("log_every_steps"), done) or last or preempted:
        _check_finite(pending, specs, checkpointer)
        summary = _summarize(pending, specs, replicas)
        summary["train/steps_per_sec"] = len(pending) / (time.perf_counter() - t0)
        writer.write(done, summary)
        bar.set_postfix(loss=f"{summary['train/loss']:.4f}")
        pending, t0 = [], time.perf_counter()
      if every(cfg("eval_every_steps"), done) and not last:
        res, _ = evaluate(eval_fn, state.params, splits["validation"], specs, groups,
                          cfg("eval_batch_size"), mesh, replicas)
        writer.write(done, {f"validation/{t}/{m}": v for t, r in res.items() for m, v in r.items()})
      if every(cfg("checkpoint_every_steps"), done) or last or preempted:
        _check_finite(pending, specs, checkpointer)
        checkpointer.save(done, state, replicas.data_state(train_iters), force=bool(preempted))
      if preempted:
        checkpointer.wait()
        raise TrainingPreempted(f"SIGTERM at step {done}: checkpoint saved in "
                                f"{checkpointer.directory}; rerun the same command to resume")
    checkpointer.wait()
    results, per_replica = {}, {}
    for split in ("validation", "test"):
      if split in splits:
        results[split], per_replica[split] = evaluate(
            eval_fn, state.params, splits[split], specs, groups, cfg("eval_batch_size"), mesh,
            replicas)
    writer.write(num_steps, {f"{split}/{t}/{m}": v for split, r in results.items()
                             for t, mm in r.items() for m, v in mm.items()})
  finally:
    bar.close()
    writer.close()
    checkpointer.close()
    if previous_handler is not None:
      signal.signal(signal.SIGTERM, previous_handler)

  if replicas.stacked:
    results["replicas"] = [{"seed": seed, **{split: per_replica[split][r] for split in per_replica}}
                           for r, seed in enumerate(replicas.seeds)]
  results = metric_writer.to_jsonable(results)
  if is_main:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
    print(metric_writer.results_table({k: v for k, v in results.items() if k != "replicas"}),
          flush=True)
  return results


def final_params(workdir: str):
  """The parameters of the latest checkpoint in ``workdir`` as NumPy (for tests and tools)."""
  return load_params_numpy(workdir)
