"""One way to build a run: ``build_program`` (model to jitted-ready step) and ``setup``
(program + data + mesh + checkpoint), shared by training, benchmarks, studies and tests.

Init priority, in one place: a checkpoint in ``workdir`` (resume) >
``config.init_from`` (pretrained parameters, partially loaded) > scratch.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mtl_jax import (config_keys, config_validation, optim, parallel, partial_load, precision,
                     regularizers, routing, sharding, tasks, transfer)
from mtl_jax.checkpoint import Checkpointer, check_workdir_config
from mtl_jax.data import build_dataset
from mtl_jax.data.checks import check_splits
from mtl_jax.data import grouping, mixing, streaming
from mtl_jax.data.feed import TrainFeed
from mtl_jax.models import build_model
from mtl_jax.models.sharing import layout as sharing_layout
from mtl_jax.replicas import Replicas
from mtl_jax.step import TrainState, make_eval_step, make_train_step
from mtl_jax.weighting.representation_strategy import RepresentationStrategy
from mtl_jax.weighting.factory import build_strategy
from mtl_jax.weighting.strategy import WeightingStrategy


@dataclasses.dataclass
class Program:
  """Everything a config compiles to, before data, workdir or jit.

  ``state`` is initialised (and replicated on ``mesh`` when one is given);
  ``train_step`` and ``eval_step`` are pure (vmapped over replicas when
  ``num_seeds > 1``), ready for ``jax.jit`` or ``lax.scan``.
  """
  config: Any
  specs: Sequence[tasks.TaskSpec]
  groups: Sequence[tasks.TaskGroup]
  model: Any
  replicas: Replicas
  tx: Any
  param_labels: Any
  trainable: Any
  strategy: WeightingStrategy
  state: TrainState
  train_step: Callable
  eval_step: Callable
  param_group_log: Sequence[str] = ()

  def fresh_state(self, params, rng) -> TrainState:
    """A step-0 state for one replica's ``params`` (e.g. inside a study's own vmap/scan)."""
    return TrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=self.tx.init(params),
                      rng=rng, weighting=self.strategy.init_state())


def build_program(config, sample_inputs, mesh=None, params=None, load_pretrained: bool = True,
                  verbose: bool = False, wrap_strategy: Optional[Callable] = None) -> Program:
  """Model, parameter groups, optimizer, weighting strategy, state and steps from ``config``.

  ``sample_inputs``: one example batch ([1, ...] arrays) to initialise with.
  ``params``: use these instead of ``model.init`` (e.g. host-drawn for
  benchmarks); ``load_pretrained=False`` skips ``config.init_from`` (resume);
  ``wrap_strategy(strategy) -> strategy`` replaces the weighting strategy the
  config asks for (e.g. a benchmark's loop baseline of the same aggregator).
  """
  cfg = lambda k: config_keys.get(config, k)  # noqa: E731
  specs = tasks.specs_from_config(config.tasks)
  groups = tasks.group_tasks(specs)
  model = build_model(config.model, groups)
  if getattr(model, "route_heads", False):
    routing.check_groups(groups)
  replicas = Replicas(int(cfg("num_seeds")), int(cfg("seed")))
  put = (lambda tree: jax.device_put(tree, parallel.replicated(mesh))) if mesh else (lambda t: t)
  policy = precision.policy(config.model)

  def init(key):
    init_rng, state_rng = jax.random.split(key)
    return policy.cast_params(model.init(init_rng, sample_inputs)["params"]), state_rng

  # Parameter shardings (mtl_jax/sharding.py): replicated unless config.sharding says.
  p_shard = None
  if mesh:
    shapes = jax.eval_shape(replicas.vmap(init), replicas.keys())[0] if params is None else params
    p_shard = sharding.param_shardings(cfg("sharding"), shapes, mesh, replicas.stacked)
  put_params = (lambda tree: jax.device_put(tree, p_shard)) if mesh else (lambda t: t)
  if params is None:
    out = dict(out_shardings=(p_shard, parallel.replicated(mesh))) if mesh else {}
    params, state_rng = jax.jit(replicas.vmap(init), **out)(replicas.keys())
  else:
    params = put_params(params)
    state_rng = replicas.vmap(lambda k: jax.random.split(k)[1])(replicas.keys())
  if cfg("init_from") and load_pretrained:
    params = put_params(partial_load.apply_init_from(cfg("init_from"), params, replicas,
                                                     verbose, groups))
  one_replica = replicas.first(params)
  tx, labels, group_log = optim.make_optimizer(config.optimizer, cfg("param_groups"),
                                               one_replica, int(config.num_train_steps))
  logging.info("parameter groups:\n%s", "\n".join(group_log))
  trainable = optim.trainable_mask(labels)
  lay = sharing_layout(config.model.get("sharing", "hard"))
  strategy = build_strategy(cfg("weighting"), len(specs), one_replica, lay.shared, lay.blocks)
  if wrap_strategy is not None:
    strategy = wrap_strategy(strategy)
  if getattr(model, "route_heads", False):
    if isinstance(strategy, RepresentationStrategy):
      raise ValueError("model.route_heads runs each example through its own head only, but "
                       "weighting mode='representation' needs every task's head on every "
                       "example's features; use one or the other")
  opt_init = replicas.vmap(tx.init)
  jit_out = {}
  if mesh:
    jit_out = dict(out_shardings=sharding.opt_state_shardings(
        jax.eval_shape(opt_init, params), p_shard, params, mesh))
  state = TrainState(
      step=put(replicas.broadcast(jnp.asarray(0, jnp.int32))), params=params,
      opt_state=jax.jit(opt_init, **jit_out)(params),
      rng=put(state_rng), weighting=put(replicas.broadcast(strategy.init_state())))
  train_step = make_train_step(model=model, tx=tx, specs=specs, groups=groups, trainable=trainable,
                               regularizer=regularizers.build_regularizer(cfg("regularizers")),
                               strategy=strategy, policy=policy,
                               grad_accum_steps=int(cfg("grad_accum_steps")))
  return Program(config=config, specs=specs, groups=groups, model=model, replicas=replicas, tx=tx,
                 param_labels=labels, trainable=trainable, strategy=strategy, state=state,
                 train_step=replicas.vmap(train_step),
                 eval_step=replicas.vmap(make_eval_step(model, policy), in_axes=(0, None)),
                 param_group_log=group_log)


@dataclasses.dataclass
class Run:
  """A program bound to data, devices and a workdir: what the training loop iterates."""
  config: Any
  program: Program
  mesh: Any
  splits: Dict[str, Any]
  feed: TrainFeed
  checkpointer: Checkpointer
  train_step: Callable   # jitted, state donated
  eval_fn: Callable      # jitted
  start_step: int
  # Every dataset with its own splits (one for ``config.data``); ``splits``
  # is the only dataset's splits, empty with several (docs/datasets.md).
  sources: Sequence[mixing.Source] = ()
  phases: Sequence[mixing.Phase] = ()


def load_splits(config, specs) -> Dict[str, Any]:
  """The configured dataset's splits, labels checked, restricted to the configured tasks.

  A streaming split (``data/streaming.py``) is checked chunk by chunk, never
  read whole; an ArrayDataset is one chunk.
  """
  data = build_dataset(config.data)
  names = [s.name for s in specs]
  splits = {}
  for split in ("train", "validation", "test"):
    ds = getattr(data, split)
    if ds is None:
      continue
    for _, chunk in streaming.chunks(ds):
      tasks.validate_batch(specs, chunk["labels"], chunk["mask"], inputs=chunk["inputs"])
    splits[split] = ds.select_tasks(names)
  check_splits(splits)
  return splits


def setup(config, workdir: str, mesh=None) -> Run:
  """Everything ``train_and_evaluate`` needs, resumed from ``workdir`` if it holds a checkpoint."""
  config_validation.check_config_keys(config)
  is_main = jax.process_index() == 0
  check_workdir_config(workdir, config.to_json(), is_main)
  plan = transfer.plan(config)
  if plan:
    config = plan.config
  cfg = lambda k: config_keys.get(config, k)  # noqa: E731
  specs = tasks.specs_from_config(config.tasks)
  phases = ()
  mixing.check_unused(config)
  if mixing.uses_mixture(config):
    if plan and plan.cache_trunk:
      raise ValueError("transfer strategy cached_probe caches one dataset's features; it does "
                       "not support config.datasets or config.stages")
    sources = mixing.load_sources(config, specs)
    phases = mixing.build_phases(config, sources, specs)
    splits = sources[0].splits if len(sources) == 1 else {}
  else:
    splits = load_splits(config, specs)
    if plan and plan.cache_trunk:
      splits = transfer.cache_features(splits, plan.cache_trunk, plan.upstream)
    sources = [mixing.Source(config.data.name, config.data.name, tuple(s.name for s in specs),
                             None, splits)]

  mesh = mesh or parallel.make_mesh(cfg("num_devices"), int((cfg("mesh") or {}).get("model", 1)))
  parallel.check_batch_size(config.batch_size, mesh)
  accum = int(cfg("grad_accum_steps"))
  data = parallel.data_size(mesh)
  if config.batch_size % (accum * data):  # accum >= 1: config_validation
    raise ValueError(f"grad_accum_steps={accum}: batch_size={config.batch_size} must split into "
                     f"{accum} microbatches that each divide over the {data} devices "
                     f"(batch_size % (grad_accum_steps * devices) == 0)")
  parallel.check_batch_size(cfg("eval_batch_size"), mesh, "eval_batch_size")
  checkpointer = Checkpointer(workdir, cfg("keep_checkpoints"))
  resume = checkpointer.latest_step() is not None
  if config.model.get("route_heads", False):
    groups = tasks.group_tasks(specs)
    for src in sources:
      for start, chunk in streaming.chunks(src.splits["train"]):
        routing.check_one_labelled_task(groups, chunk["mask"], f"dataset {src.alias!r} train",
                                        start)
  sample = sources[0].splits["train"].take(np.arange(1))["inputs"]
  program = build_program(config, sample, mesh, load_pretrained=not resume, verbose=is_main)
  replicas = program.replicas
  if phases:
    mixed = mixing.mixing_options(config)["batches"] == "mixed"
    groups = [grouping.train_groups(src.splits["train"], specs) for src in sources]
    feed = TrainFeed(None, config.batch_size, replicas.seeds, lambda seed: mixing.MixtureIterator(
        sources, phases, config.batch_size, seed, mixed, jax.process_index(), jax.process_count(),
        groups), prefetch=cfg("prefetch_batches"))
    for p in phases:
      streams = [(sources[d].alias, round(float(q), 4)) for (d, _), q in zip(p.streams, p.probs)]
      logging.info("steps %d-%d: %s; streams %s", p.start, p.end, p.label, streams)
  else:
    feed = TrainFeed(splits["train"], config.batch_size, replicas.seeds, name=sources[0].alias,
                     prefetch=cfg("prefetch_batches"),
                     groups=grouping.train_groups(splits["train"], specs))
  state = program.state
  if resume:
    state, data_state = checkpointer.restore(state)
    feed.set_state(data_state)
    logging.info("resumed from step %d in %s", replicas.step(state), checkpointer.directory)
  program.state = state

  rep, dat = parallel.replicated(mesh), parallel.data_sharding(mesh)
  state_sh = sharding.state_shardings(state, mesh)
  train_step = jax.jit(program.train_step, in_shardings=(state_sh, feed.sharding(mesh)),
                       out_shardings=(state_sh, rep), donate_argnums=0)
  eval_fn = jax.jit(program.eval_step, in_shardings=(state_sh.params, dat), out_shardings=rep)
  return Run(config=config, program=program, mesh=mesh, splits=splits, feed=feed,
             checkpointer=checkpointer, train_step=train_step, eval_fn=eval_fn,
             start_step=replicas.step(state), sources=sources, phases=phases)
