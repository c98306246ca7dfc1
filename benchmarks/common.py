"""Shared helpers for the step-time benchmarks.

Builds the library's own program (``mtl_jax.run.build_program``: state and
train step, as training does) from a plain config dict, makes random batches
in the masked multi-task format and times jitted steps (compile separately,
warm-up, repeats, median).

Benchmark scripts print exactly one JSON object on stdout; everything else
(progress, logs) goes to stderr.
"""

import json
import statistics
import sys
import time
from typing import Any, Dict, List, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mtl_jax import tasks
from mtl_jax.models.sharing import zero_features
from mtl_jax.run import build_program


def log(*args) -> None:
  print(*args, file=sys.stderr, flush=True)


def emit(result: Mapping[str, Any]) -> None:
  """The one JSON object a benchmark prints on stdout."""
  print(json.dumps(result, indent=2, sort_keys=False), flush=True)


def environment() -> Dict[str, Any]:
  import os
  return {"jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count()}


# --------------------------------------------------------------------- building


def binary_tasks(n: int, prefix: str = "t") -> List[Dict[str, Any]]:
  return [{"name": f"{prefix}{i}", "kind": "binary"} for i in range(n)]


def mixed_tasks(n: int) -> List[Dict[str, Any]]:
  """``n`` tasks cycling through the four kinds (so a few stacked groups)."""
  kinds = [("binary", 1), ("multiclass", 10), ("multilabel", 5), ("regression", 1)]
  out = []
  for i in range(n):
    kind, k = kinds[i % len(kinds)]
    out.append({"name": f"t{i}", "kind": kind, "num_outputs": k})
  return out


class Built:
  """Everything a benchmark needs about one configuration: a built program, its batch shape."""

  def __init__(self, program, input_shape, batch_size, config):
    self.program, self.config = program, config
    self.specs, self.groups, self.model, self.tx = (program.specs, program.groups, program.model,
                                                    program.tx)
    self.labels, self.trainable = program.param_labels, program.trainable
    self.state, self.step_fn = program.state, program.train_step
    self.strategy = program.strategy
    self.input_shape, self.batch_size = tuple(input_shape), batch_size

  def num_params(self, trainable_only: bool = False) -> int:
    leaves = jax.tree.leaves(self.state.params)
    flags = jax.tree.leaves(self.trainable)
    return int(sum(x.size for x, t in zip(leaves, flags) if t or not trainable_only))


def _host_init(shapes, seed: int):
  """Parameters of the given shapes drawn on the host: LeCun-normal-like kernels
  (fan-in = second-to-last axis), zero biases. Same shapes and scale as the model's
  own init, without compiling it (the init's RNG program compiles slower than a
  small train step, which matters for smoke runs only)."""
  rs = np.random.RandomState(seed)

  def one(path, leaf):
    if str(getattr(path[-1], "key", path[-1])) == "bias" or len(leaf.shape) < 2:
      return np.zeros(leaf.shape, leaf.dtype)
    keys = [str(getattr(k, "key", k)) for k in path]
    # Stacked heads are [T, D, O] (fan-in D); Dense/Conv kernels [..., in, out].
    fan_in = leaf.shape[-2] if keys[0] == "heads" else int(np.prod(leaf.shape[:-1]))
    return (rs.randn(*leaf.shape) / np.sqrt(fan_in)).astype(leaf.dtype)

  return jax.device_put(jax.tree_util.tree_map_with_path(one, shapes))


def flat_leaves(tree) -> Dict[str, Any]:
  """{"trunk/block_0/Dense_0/kernel": leaf, ...} (mtl_jax.paths.flatten)."""
  from mtl_jax import paths
  return paths.flatten(tree)


def _config_dict(config: Mapping[str, Any], seed: int, weighting=None) -> ml_collections.ConfigDict:
  c = {k: v for k, v in config.items() if k != "input_shape"}
  c.setdefault("num_train_steps", 1000)
  c["seed"] = seed
  c["param_groups"] = [tuple(r) for r in config.get("param_groups", [(".*", 1.0)])]
  if weighting is not None:
    c["weighting"] = weighting
  return ml_collections.ConfigDict(c)


def build(config: Mapping[str, Any], seed: int = 0, host_init: bool = False,
          weighting=None, params=None, wrap_strategy=None, sample=None) -> Built:
  """The library's program (``mtl_jax.run.build_program``) from a config dict.

  ``config`` keys: those of a training config (``tasks``, ``model``,
  ``optimizer``, ``param_groups``, ``batch_size``, ``regularizers``,
  ``weighting``, ``num_train_steps`` for schedules, default 1000) plus
  ``input_shape`` (per example). ``host_init`` draws the parameters with
  NumPy instead of compiling ``model.init`` (for --quick runs; step times do
  not depend on the values). ``weighting`` overrides ``config["weighting"]``;
  ``params`` and ``wrap_strategy`` are passed to ``build_program``. ``sample``: the
  [1, ...] example to initialise with (a dict for token inputs); default float zeros
  of ``input_shape``.
  """
  cfg = _config_dict(config, seed, weighting)
  if sample is None:
    sample = np.zeros((1,) + tuple(config["input_shape"]), np.float32)
  if host_init and params is None:
    from mtl_jax import tasks as tasks_lib
    from mtl_jax.models import build_model
    model = build_model(cfg.model, tasks_lib.group_tasks(tasks_lib.specs_from_config(cfg.tasks)))
    shapes = jax.eval_shape(lambda r: model.init(r, sample)["params"], jax.random.PRNGKey(seed))
    params = _host_init(shapes, seed)
  program = build_program(cfg, sample, params=params, wrap_strategy=wrap_strategy)
  return Built(program, config["input_shape"], int(config["batch_size"]), config)


def random_batch(specs: Sequence[tasks.TaskSpec], batch_size: int, input_shape: Sequence[int],
                 seed: int = 0, label_frac: float = 0.5) -> Dict[str, Any]:
  """A batch ``{"inputs", "labels": {task: ...}, "mask": {task: bool}}`` as device arrays.

  Roughly ``label_frac`` of the examples of each task are labelled; unlabelled
  entries hold placeholders (-1 / NaN) as real partially-labelled data does.
  """
  rs = np.random.RandomState(seed)
  inputs = rs.randn(batch_size, *input_shape).astype(np.float32)
  labels, mask = {}, {}
  for s in specs:
    m = rs.rand(batch_size) < label_frac
    shape = (batch_size,) + s.label_shape
    if s.kind == "binary" or s.kind == "multilabel":
      lab = rs.randint(0, 2, shape).astype(np.float32)
      lab[~m] = -1
    elif s.kind == "multiclass":
      lab = rs.randint(0, s.num_outputs, shape).astype(np.int32)
      lab[~m] = -1
    else:
      lab = rs.randn(*shape).astype(np.float32)
      lab[~m] = np.nan
    tasks.validate_labels(s, lab, m)
    labels[s.name], mask[s.name] = lab, m
  return jax.device_put({"inputs": inputs, "labels": labels, "mask": mask})


# ----------------------------------------------------------------------- timing


def block(tree) -> None:
  jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x, tree)


class StepTimer:
  """A compiled train step with its own (donated, threaded) state and a fixed batch.

  ``mesh``: compile under the shardings ``mtl_jax.run.setup`` gives the step (the
  state per ``config.sharding``, the batch on the ``data`` axis); default one device.
  """

  def __init__(self, built: Built, batch, donate: bool = True, mesh=None):
    kwargs, state_sh = {}, None
    if mesh is not None:
      from mtl_jax import parallel, sharding
      state_sh = sharding.state_shardings(built.state, mesh)
      batch = jax.device_put(batch, parallel.data_sharding(mesh))
      kwargs = dict(in_shardings=(state_sh, parallel.data_sharding(mesh)),
                    out_shardings=(state_sh, parallel.replicated(mesh)))
    jitted = jax.jit(built.step_fn, donate_argnums=0 if donate else (), **kwargs)
    t0 = time.perf_counter()
    self.lowered = jitted.lower(built.state, batch)
    t1 = time.perf_counter()
    self.compiled = self.lowered.compile()
    t2 = time.perf_counter()
    self.lower_s, self.compile_s = t1 - t0, t2 - t1
    # Donation would invalidate built.state; keep the caller's copy intact (a host
    # round trip: no per-shape copy kernels to compile).
    self.state = jax.device_put(jax.device_get(built.state), state_sh)
    self.batch = batch

  def run(self, n: int) -> float:
    """Runs ``n`` steps back to back; returns seconds per step."""
    state = self.state
    block(state)
    t0 = time.perf_counter()
    for _ in range(n):
      state, metrics = self.compiled(state, self.batch)
    block((state, metrics))
    dt = time.perf_counter() - t0
    self.state = state
    return dt / n

  def cost(self) -> Dict[str, float]:
    """XLA's cost analysis of the compiled step (flops, bytes accessed), if available."""
    try:
      ca = self.compiled.cost_analysis()
      if isinstance(ca, (list, tuple)):
        ca = ca[0]
      return {k: float(ca[k]) for k in ("flops", "bytes accessed") if k in ca}
    except Exception:  # noqa: BLE001 -- optional diagnostics
      return {}


class FedStep:
  """A ``Run``'s jitted train step, timed on one fixed batch (the step alone) or fed by a
  ``TrainFeed`` (the step plus the input path); one state threads through both."""

  def __init__(self, run, feed=None):
    self.run = run
    self.state, self.fixed = run.program.state, (feed or run.feed).next(run.mesh)
    self.state, metrics = run.train_step(self.state, self.fixed)  # compile and warm up
    block(metrics)

  def seconds(self, n: int, feed=None) -> float:
    """Seconds per step over ``n`` steps, on ``feed``'s batches or the fixed one."""
    mesh, step = self.run.mesh, self.run.train_step
    t0 = time.perf_counter()
    for _ in range(n):
      self.state, metrics = step(self.state, self.fixed if feed is None else feed.next(mesh))
    block((self.state, metrics))
    return (time.perf_counter() - t0) / n


def host_batch_seconds(feed, n: int, warmup: int = 3) -> float:
  """Seconds per host batch (NumPy, before the device transfer) of ``feed``."""
  for _ in range(warmup):
    feed.next_local()
  t0 = time.perf_counter()
  for _ in range(n):
    feed.next_local()
  return (time.perf_counter() - t0) / n


def time_interleaved(timers: Mapping[str, StepTimer], repeats: int, steps_per_repeat: int,
                     warmup: int = 2) -> Dict[str, Dict[str, float]]:
  """Times several steps round-robin (so machine noise hits all alike).

  Each repeat runs ``steps_per_repeat`` steps of every timer in turn (in an
  order rotated per repeat); returns per name the median and min ms/step
  and every sample.
  """
  names = list(timers)
  for name in names:
    timers[name].run(warmup)
  samples: Dict[str, List[float]] = {n: [] for n in names}
  for r in range(repeats):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      samples[name].append(timers[name].run(steps_per_repeat) * 1e3)
  return {n: {"median_ms": statistics.median(s), "min_ms": min(s),
              "samples_ms": [round(x, 4) for x in s]} for n, s in samples.items()}


def steps_for(timer: StepTimer, target_s: float = 0.2, cap: int = 200) -> int:
  """Steps per repeat so that one repeat takes about ``target_s`` seconds."""
  per = timer.run(1)
  return int(max(1, min(cap, round(target_s / max(per, 1e-6)))))


def ratio(a: float, b: float) -> float:
  return float(a / b) if b > 0 else float("inf")


def paired_ratio(samples_a: Sequence[float], samples_b: Sequence[float]) -> float:
  """Median of per-repeat ratios a_i / b_i (the repeats were taken side by side)."""
  return float(statistics.median([a / b for a, b in zip(samples_a, samples_b)]))


# ------------------------------------------------------------ weighting, memory


def shared_feature_shape(model, input_shape: Sequence[int], batch_size: int):
  """Shape of the representation ``model`` exposes to representation-gradient methods
  (``mtl_jax.models.sharing.zero_features``), or None when it exposes none."""
  z = zero_features(model, jnp.zeros((batch_size,) + tuple(input_shape), jnp.float32))
  return None if z is None else tuple(z.shape)


def with_weighting(built: Built, weighting, strategy_cls=None) -> Built:
  """``built``'s config and parameters with its losses combined per ``weighting`` (a
  ``config.weighting`` dict; None: equal weights), built by the same factory.

  ``strategy_cls`` (optional) replaces the strategy the factory picks by
  ``strategy_cls.like(strategy)`` (e.g. a loop baseline of the same aggregator).
  """
  return build(built.config, weighting=weighting, params=built.state.params,
               wrap_strategy=strategy_cls.like if strategy_cls else None)


def memory_stats(compiled) -> Dict[str, int]:
  """XLA's buffer assignment of a compiled program (bytes): temp, argument, output,
  alias, ``total`` = argument + output - alias + temp (everything live at once, an
  upper bound of the peak) and ``peak`` as the backend reports it (0 if it does not;
  on CPU it is not the sum above, so compare ``temp``/``total``)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 -- optional diagnostics
    return {}
  if m is None:
    return {}
  out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in ("temp", "argument", "output", "alias")}
  out["total"] = out["argument"] + out["output"] - out["alias"] + out["temp"]
  out["peak"] = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
  return out


def time_interleaved_each(runners: Mapping[str, Any], repeats: int, counts: Mapping[str, int],
                          warmup: int = 1) -> Dict[str, Dict[str, float]]:
  """``time_interleaved`` with a count per runner: each repeat calls
  ``runners[name].run(counts[name])`` (seconds per unit) for every name, round-robin in
  an order rotated per repeat. Returns per name the median and min ms per unit and
  every sample."""
  names = list(runners)
  if not names:
    return {}
  for name in names:
    if warmup:
      runners[name].run(warmup)
  samples: Dict[str, List[float]] = {n: [] for n in names}
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      samples[name].append(runners[name].run(counts[name]) * 1e3)
  return {n: {"median_ms": statistics.median(s), "min_ms": min(s),
              "samples_ms": [round(x, 4) for x in s]} for n, s in samples.items()}
