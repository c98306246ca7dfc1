"""Gradient-method train steps: mtl_jax against torchjd and a LibMTL-style PyTorch loop.

Same model, batch, T and initial parameters on every side, timed warm and
round-robin in one process (issue 11, "Benchmarks"): a hard-shared MLP
input_dim -> 256 -> 256 (ReLU) with T linear regression heads (one output
each), batch 512 (half of each task's examples labelled, as
``common.random_batch`` makes them), masked MSE per task, Adam lr 1e-3. One
step = forward, per-task gradients of the shared parameters, aggregation,
optimizer update.

Sides (``<side>/<aggregator>``):

* ``mtl_jax/<agg>``: the library's own jitted train step for
  ``{"aggregator": agg}``, built by ``common.with_weighting`` (whatever path the
  library picks for that aggregator: its ``strategy`` class is reported), plus
  ``mtl_jax/ew`` (``weighting`` unset: one backward pass) as the floor.
* ``torchjd_autogram/<agg>``: torchjd's Gramian engine as its docs write the
  step: ``engine = Engine(trunk, batch_dim=None)`` (the Gramian of the shared
  parameters only; the per-task losses have no batch axis),
  ``gramian = engine.compute_gramian(losses)``, ``weights = weighting(gramian)``,
  ``losses.backward(weights)``, ``optimizer.step()``.
* ``torchjd_autojac/<agg>``: torchjd's MTL path as its README writes it:
  ``mtl_backward(losses, features=features)``,
  ``jac_to_grad(trunk.parameters(), aggregator)``, ``optimizer.step()``.
* ``loop/<agg>``: what LibMTL (``AbsWeighting._compute_grad(mode="backward")``)
  and most PyTorch MTL code do: one forward pass, T ``loss_t.backward(
  retain_graph=True)`` calls, each copying the shared parameters' ``.grad``
  into row t of a [T, P] matrix and clearing them (the heads keep their own
  task's gradient), then torchjd's own aggregator on that matrix, the result
  written to the shared ``.grad``, ``optimizer.step()``. The per-task losses
  stay separate tensors (backward of ``stack(losses)[t]`` would run every
  head's backward for every t: T² head passes, a strawman).
* ``torch/ew``: ``sum(losses).backward()``: PyTorch's floor.

The heads' gradient differs by path as the peers define it: the loop and
autojac give head t the gradient of L_t, autogram gives w_t times it. The
heads are 257·T parameters next to the trunk's 91,648, so this does not move
the timings.

Goals (issue 11): mtl_jax UPGrad and MGDA <= 0.5x torchjd's step at T=8 and
T=128 (against the faster of torchjd's two paths); mtl_jax PCGrad, MGDA and
CAGrad <= 0.2x the loop at T=8 and <= 0.05x at T=128. Ratios are medians of
per-repeat ratios (the repeats are taken side by side). Threads: both sides use
their defaults unless --torch-threads / XLA_FLAGS say otherwise (reported
under "threads"). On a machine shared with other jobs, torch's OpenMP threads
wait on descheduled peers (measured here on 2 loaded cores: torch's EW step
5-10x slower with 2 threads than with 1), so pin both sides to one thread
there. Compare ratios from one run, not absolute times across runs.

On a shared 2-core CPU (as measured for issue 11):
  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    python benchmarks/weighting_vs_torch.py --repeats 3 --torch-threads 1

Prints one JSON object on stdout:
  {"benchmark", "config", "num_tasks", "params", "methods", "mtl_jax_strategy",
   "step_time_ms": {T: {name: ms}}, "step_time_min_ms", "steps_per_repeat",
   "ratio_vs_torchjd": {T: {agg: {"autogram", "autojac", "best"}}},
   "ratio_vs_loop": {T: {agg: ratio}}, "targets", "target_met", "skipped",
   "compile_s", "threads", "environment"}
"""

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402

AGGREGATORS = ("upgrad", "mgda", "pcgrad", "cagrad")
REFERENCES = ("mean",)
TORCHJD_TARGET = {8: 0.5, 128: 0.5}          # mtl_jax / torchjd, for TORCHJD_GOAL_METHODS
LOOP_TARGET = {8: 0.2, 128: 0.05}            # mtl_jax / loop, for LOOP_GOAL_METHODS
TORCHJD_GOAL_METHODS = ("upgrad", "mgda")
LOOP_GOAL_METHODS = ("pcgrad", "mgda", "cagrad")


# ----------------------------------------------------------------------- torch side


def _torch():
  import torch
  return torch


def torch_model(input_dim, trunk, num_tasks):
  """The PyTorch twin of mtl_jax's HardSharing(mlp trunk) with T one-output heads:
  ``trunk`` a Sequential of Linear+ReLU, ``heads`` a ModuleList of Linear(d, 1), one
  module per task as LibMTL's decoders and torchjd's examples have them."""
  nn = _torch().nn

  class Model(nn.Module):

    def __init__(self):
      super().__init__()
      layers, d = [], input_dim
      for f in trunk:
        layers += [nn.Linear(d, f), nn.ReLU()]
        d = f
      self.trunk = nn.Sequential(*layers)
      self.heads = nn.ModuleList(nn.Linear(d, 1) for _ in range(num_tasks))

  return Model()


def jax_weights(params, trunk, num_tasks, task_order):
  """mtl_jax's initial parameters as NumPy, in torch layout:
  ([(W [out, in], b [out]) per trunk layer], head W [T, d], head b [T]).

  Raises if the parameter tree is not the one this benchmark mirrors.
  """
  flat = jax.tree_util.tree_flatten_with_path(jax.device_get(params))[0]
  named = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v) for path, v in flat}
  layers = []
  for i in range(len(trunk)):
    ks = [n for n in named if n.startswith(f"trunk/block_{i}/") and n.endswith("/kernel")]
    if len(ks) != 1:
      raise ValueError(f"expected one kernel under trunk/block_{i}/ in mtl_jax's params, got "
                       f"{ks}; parameter names: {sorted(named)}")
    kernel, bias = named[ks[0]], named[ks[0][:-len("kernel")] + "bias"]
    layers.append((kernel.T.copy(), bias.copy()))
  hk = [n for n in named if n.startswith("heads/") and n.endswith("/kernel")]
  if len(hk) != 1 or named[hk[0]].shape[0] != num_tasks or named[hk[0]].shape[2] != 1:
    raise ValueError(f"expected one stacked head kernel [T={num_tasks}, d, 1], got "
                     f"{[(n, named[n].shape) for n in hk]}")
  head_w = named[hk[0]][:, :, 0][task_order]                      # [T, d]
  head_b = named[hk[0][:-len("kernel")] + "bias"][:, 0][task_order]  # [T]
  if len(named) != 2 * len(trunk) + 2:
    raise ValueError(f"mtl_jax's model has parameters this benchmark does not mirror: "
                     f"{sorted(named)}")
  return layers, head_w, head_b


def load_weights(model, weights):
  torch = _torch()
  layers, head_w, head_b = weights
  linears = [m for m in model.trunk if isinstance(m, torch.nn.Linear)]
  with torch.no_grad():
    for lin, (w, b) in zip(linears, layers):
      lin.weight.copy_(torch.from_numpy(w))
      lin.bias.copy_(torch.from_numpy(b))
    for t, head in enumerate(model.heads):
      head.weight.copy_(torch.from_numpy(head_w[t:t + 1]))
      head.bias.copy_(torch.from_numpy(head_b[t:t + 1]))


class TorchBatch:
  """The mtl_jax batch as torch tensors: inputs [B, D] and per task a zero-filled
  target column, a 0/1 mask column and 1 / (number labelled), as mtl_jax's masked mean."""

  def __init__(self, batch, names):
    torch = _torch()
    host = jax.device_get(batch)
    self.inputs = torch.from_numpy(np.array(host["inputs"], np.float32))
    self.targets, self.masks, self.inv_count = [], [], []
    for n in names:
      m = np.asarray(host["mask"][n], bool)
      y = np.where(m, np.asarray(host["labels"][n], np.float32), 0.0).astype(np.float32)
      self.targets.append(torch.from_numpy(y))
      self.masks.append(torch.from_numpy(m.astype(np.float32)))
      self.inv_count.append(1.0 / max(int(m.sum()), 1))


def task_losses(model, batch):
  """(shared features, list of T scalar losses): masked MSE per task."""
  features = model.trunk(batch.inputs)
  losses = [((head(features)[:, 0] - y).square() * m).sum() * inv
            for head, y, m, inv in zip(model.heads, batch.targets, batch.masks, batch.inv_count)]
  return features, losses


def numpy_losses(weights, batch):
  """Independent oracle of the same forward pass (NumPy, float64)."""
  layers, head_w, head_b = weights
  h = batch.inputs.numpy().astype(np.float64)
  for w, b in layers:
    h = np.maximum(h @ w.T + b, 0.0)
  out = h @ head_w.T.astype(np.float64) + head_b  # [B, T]
  y = np.stack([t.numpy() for t in batch.targets], 1)
  m = np.stack([t.numpy() for t in batch.masks], 1)
  return ((out - y) ** 2 * m).sum(0) * np.asarray(batch.inv_count)


def torchjd_aggregator(name):
  from torchjd import aggregation as agg
  return {"upgrad": agg.UPGrad, "mgda": agg.MGDA, "pcgrad": agg.PCGrad,
          "cagrad": lambda: agg.CAGrad(c=0.5), "mean": agg.Mean}[name]()


def torchjd_weighting(name):
  from torchjd import aggregation as agg
  return {"upgrad": agg.UPGradWeighting, "mgda": agg.MGDAWeighting,
          "pcgrad": agg.PCGradWeighting, "cagrad": lambda: agg.CAGradWeighting(c=0.5),
          "mean": agg.MeanWeighting}[name]()


def torch_step(side, agg_name, model, batch, lr, foreach, losses_fn=None):
  """A closure running one full PyTorch train step of ``side`` (see module docstring).

  ``losses_fn(model, batch) -> (shared features, [T scalar losses])`` defaults to this
  benchmark's masked MSE (benchmarks/dense_step_time.py passes its per-pixel losses); the
  model needs ``trunk`` (the shared part) and ``heads``.
  """
  torch = _torch()
  task_losses = losses_fn or globals()["task_losses"]
  opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=foreach)
  shared = list(model.trunk.parameters())

  if side == "torch":  # equal weights: one backward pass

    def step():
      _, losses = task_losses(model, batch)
      torch.stack(losses).sum().backward()
      opt.step()
      opt.zero_grad()

  elif side == "torchjd_autogram":
    from torchjd.autogram import Engine
    engine = Engine(model.trunk, batch_dim=None)
    weighting = torchjd_weighting(agg_name)

    def step():
      _, losses = task_losses(model, batch)
      losses = torch.stack(losses)
      gramian = engine.compute_gramian(losses)
      weights = weighting(gramian)
      losses.backward(weights)
      opt.step()
      opt.zero_grad()

  elif side == "torchjd_autojac":
    from torchjd.autojac import jac_to_grad, mtl_backward
    aggregator = torchjd_aggregator(agg_name)

    def step():
      features, losses = task_losses(model, batch)
      mtl_backward(losses, features=features)
      jac_to_grad(model.trunk.parameters(), aggregator)
      opt.step()
      opt.zero_grad()

  elif side == "loop":
    aggregator = torchjd_aggregator(agg_name)
    sizes = [p.numel() for p in shared]
    num_tasks = len(model.heads)

    def step():
      _, losses = task_losses(model, batch)
      grads = torch.empty(num_tasks, sum(sizes))
      for t, loss in enumerate(losses):
        loss.backward(retain_graph=t < num_tasks - 1)
        torch.cat([p.grad.reshape(-1) for p in shared], out=grads[t])
        for p in shared:
          p.grad = None
      for p, g in zip(shared, aggregator(grads).split(sizes)):
        p.grad = g.view_as(p)
      opt.step()
      opt.zero_grad()

  else:
    raise ValueError(f"unknown torch side {side!r}")
  return step


class TorchRunner:
  """``common.time_interleaved_each``'s interface for a PyTorch step (CPU torch is
  synchronous: the wall time of ``n`` calls is their cost)."""

  def __init__(self, step):
    self.step = step

  def run(self, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
      self.step()
    return (time.perf_counter() - t0) / n


# ------------------------------------------------------------------------- driver


def threads():
  torch = _torch()
  return {"torch_num_threads": torch.get_num_threads(),
          "torch_num_interop_threads": torch.get_num_interop_threads(),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
          "cpu_count": os.cpu_count(),
          "sched_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                            else None,
          "jax_devices": [str(d) for d in jax.devices()]}


def methods_for(aggs):
  """[(name, side, aggregator)] timed at every T."""
  out = [("mtl_jax/ew", "mtl_jax", None), ("torch/ew", "torch", None)]
  for a in aggs:
    out.append((f"mtl_jax/{a}", "mtl_jax", a))
    if a in REFERENCES:
      out.append((f"loop/{a}", "loop", a))
      continue
    out += [(f"torchjd_autogram/{a}", "torchjd_autogram", a),
            (f"torchjd_autojac/{a}", "torchjd_autojac", a), (f"loop/{a}", "loop", a)]
  return out


def run_t(t, args, sizes, skipped, compile_s, methods):
  """Builds and times every method at T=t; returns (timings, steps, params, strategies)."""
  input_dim, trunk, batch_size = sizes
  torch = _torch()
  config = {
      "tasks": [{"name": f"t{i}", "kind": "regression"} for i in range(t)],
      "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": tuple(trunk)}},
      "optimizer": {"name": "adam", "learning_rate": args.lr},
      "param_groups": [(".*", 1.0)],
      "batch_size": batch_size,
      "input_shape": (input_dim,),
  }
  base = common.build(config, host_init=args.quick)
  batch = common.random_batch(base.specs, batch_size, base.input_shape, seed=t)
  names = [s.name for s in base.specs]
  group_names = [n for g in base.groups for n in g.names]
  weights = jax_weights(base.state.params, trunk, t, [group_names.index(n) for n in names])
  tbatch = TorchBatch(batch, names)

  # Same model and data on both sides: parameter counts and initial losses must agree.
  probe = torch_model(input_dim, trunk, t)
  load_weights(probe, weights)
  n_torch = sum(p.numel() for p in probe.parameters())
  n_jax = base.num_params()
  common.log(f"T={t}: parameters mtl_jax {n_jax:,}, torch {n_torch:,}")
  if n_torch != n_jax:
    raise RuntimeError(f"T={t}: mtl_jax has {n_jax} parameters, the torch model {n_torch}")
  with torch.no_grad():
    got = torch.stack(task_losses(probe, tbatch)[1]).numpy()
  want = numpy_losses(weights, tbatch)
  if not np.allclose(got, want, rtol=1e-4, atol=1e-6):
    raise RuntimeError(f"T={t}: torch losses {got[:4]} != NumPy oracle {want[:4]}")

  key = str(t)
  runners, strategies = {}, {}
  skipped[key], compile_s[key] = {}, {}
  for name, side, agg in methods:
    t0 = time.perf_counter()
    try:
      if side == "mtl_jax":
        built = common.with_weighting(base, None if agg is None else {"aggregator": agg})
        runner = common.StepTimer(built, batch)
        strategies[name] = type(built.strategy).__name__
      else:
        model = torch_model(input_dim, trunk, t)
        load_weights(model, weights)
        runner = TorchRunner(torch_step(side, agg, model, tbatch, args.lr, args.foreach))
      runner.run(1)  # warm-up: first call of a fresh executable / autograd graph
    except Exception as e:  # noqa: BLE001 -- a peer method that cannot run is recorded
      skipped[key][name] = f"{type(e).__name__}: {e}"[:500]
      common.log(f"T={t} {name}: SKIPPED {skipped[key][name]}")
      continue
    compile_s[key][name] = round(time.perf_counter() - t0, 3)
    runners[name] = runner
    common.log(f"T={t} {name}: ready in {compile_s[key][name]:.2f}s")
  steps = {n: args.steps or (1 if args.quick else common.steps_for(r, args.repeat_s, cap=50))
           for n, r in runners.items()}
  times = common.time_interleaved_each(runners, args.repeats, steps, warmup=0)
  for n, v in times.items():
    common.log(f"T={t} {n}: {v['median_ms']:.3f} ms/step")
  return times, steps, {"mtl_jax": n_jax, "torch": n_torch}, strategies


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--num_tasks", "--num-tasks", default=None,
                 help="comma-separated T values (default 8,128; --quick: 2)")
  p.add_argument("--repeats", type=int, default=5, help="timed repeats per T (median reported)")
  p.add_argument("--steps", type=int, default=0,
                 help="steps per repeat (0: about --repeat-s seconds of work per method)")
  p.add_argument("--repeat-s", type=float, default=0.3, help="seconds per method per repeat")
  p.add_argument("--aggregators", default=",".join(AGGREGATORS + REFERENCES),
                 help="comma-separated subset of " + ",".join(AGGREGATORS + REFERENCES))
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--foreach", type=int, default=1,
                 help="torch Adam's foreach (multi-tensor) update: 1 (faster on CPU) or 0")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch.set_num_threads (0: torch's default, one per core). On a loaded "
                      "machine its OpenMP threads wait on descheduled peers: use 1 there, and "
                      "XLA_FLAGS='--xla_cpu_multi_thread_eigen=false "
                      "intra_op_parallelism_threads=1' for the JAX side")
  p.add_argument("--quick", action="store_true", help="tiny sizes, T=2, one repeat: a smoke run")
  args = p.parse_args(argv)
  if args.torch_threads:
    _torch().set_num_threads(args.torch_threads)

  if args.quick:
    ts, sizes = [2], (16, (32, 32), 32)
    args.repeats = 1
  else:
    ts, sizes = [8, 128], (100, (256, 256), 512)
  if args.num_tasks:
    ts = [int(x) for x in args.num_tasks.split(",")]
  aggs = [a.strip() for a in args.aggregators.split(",") if a.strip()]
  bad = [a for a in aggs if a not in AGGREGATORS + REFERENCES]
  if bad or not aggs:
    raise SystemExit(f"--aggregators: unknown {bad}; valid: {list(AGGREGATORS + REFERENCES)}")
  args.foreach = bool(args.foreach)
  methods = methods_for(aggs)

  step_ms, min_ms, samples, steps_used, params, strategies = {}, {}, {}, {}, {}, {}
  skipped, compile_s = {}, {}
  for t in ts:
    times, steps, n, strat = run_t(t, args, sizes, skipped, compile_s, methods)
    key = str(t)
    step_ms[key] = {k: round(v["median_ms"], 4) for k, v in times.items()}
    min_ms[key] = {k: round(v["min_ms"], 4) for k, v in times.items()}
    samples[key] = {k: v["samples_ms"] for k, v in times.items()}
    steps_used[key], params[key], strategies[key] = steps, n, strat

  def paired(key, a, b):
    s = samples[key]
    return round(common.paired_ratio(s[a], s[b]), 4) if a in s and b in s else None

  ratio_tj, ratio_loop, targets_tj, targets_loop = {}, {}, {}, {}
  for key in step_ms:
    ratio_tj[key], ratio_loop[key] = {}, {}
    for a in aggs:
      ours = f"mtl_jax/{a}"
      if a not in REFERENCES:
        r = {"autogram": paired(key, ours, f"torchjd_autogram/{a}"),
             "autojac": paired(key, ours, f"torchjd_autojac/{a}")}
        vals = [v for v in r.values() if v is not None]
        r["best"] = max(vals) if vals else None  # against the faster torchjd path
        ratio_tj[key][a] = r
      ratio_loop[key][a] = paired(key, ours, f"loop/{a}")
    t = int(key)
    goal_t = t if t in TORCHJD_TARGET else None
    if args.quick:  # the checks run at the quick run's T, against the T=8 goals
      goal_t = 8
    if goal_t is not None:
      targets_tj[key] = {}
      for a in TORCHJD_GOAL_METHODS:
        if a in aggs:
          r = ratio_tj[key][a]["best"]
          targets_tj[key][a] = {"target": TORCHJD_TARGET[goal_t], "ratio": r,
                                "met": None if r is None else bool(r <= TORCHJD_TARGET[goal_t])}
      targets_loop[key] = {}
      for a in LOOP_GOAL_METHODS:
        if a in aggs:
          r = ratio_loop[key][a]
          targets_loop[key][a] = {"target": LOOP_TARGET[goal_t], "ratio": r,
                                  "met": None if r is None else bool(r <= LOOP_TARGET[goal_t])}
  flags = [v["met"] for d in (targets_tj, targets_loop) for per_t in d.values()
           for v in per_t.values() if v["met"] is not None]

  torch = _torch()
  import torchjd
  env = common.environment()
  env.update({"torch": torch.__version__, "torchjd": getattr(torchjd, "__version__", None)})
  if env["torchjd"] is None:
    from importlib.metadata import version
    env["torchjd"] = version("torchjd")
  common.emit({
      "benchmark": "weighting_vs_torch",
      "config": {"input_dim": sizes[0], "trunk": list(sizes[1]), "batch_size": sizes[2],
                 "tasks": "regression, 1 output each, half of each task's examples labelled",
                 "sharing": "hard", "optimizer": f"adam lr={args.lr}",
                 "torch_adam_foreach": args.foreach, "torch_threads_flag": args.torch_threads,
                 "aggregators": aggs,
                 "repeats": args.repeats, "quick": args.quick},
      "num_tasks": ts,
      "params": params,
      "methods": {n: {"side": s, "aggregator": a} for n, s, a in methods},
      "mtl_jax_strategy": strategies,
      "step_time_ms": step_ms,
      "step_time_min_ms": min_ms,
      "steps_per_repeat": steps_used,
      "ratio_vs_torchjd": ratio_tj,
      "ratio_vs_loop": ratio_loop,
      "targets": {"vs_torchjd": targets_tj, "vs_loop": targets_loop},
      "target_met": bool(all(flags)) if flags else None,
      "skipped": skipped,
      "compile_s": compile_s,
      "threads": threads(),
      "environment": env,
  })


if __name__ == "__main__":
  main()
