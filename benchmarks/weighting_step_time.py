"""Train step time of every task-weighting method vs equal weighting (EW).

One hard-sharing MLP with T binary tasks (T = 2, 8, 32). Per T, each method's
full train step (forward, gradients, combination, Adam update) is timed
round-robin with the others:

* ``ew``: the weighted sum (``config.weighting`` unset): one backward pass.
* ``loss/<name>``: loss weightings (uncertainty, dwa, gradnorm, rlw, famo).
* ``jacobian/<agg>``: aggregators on the T x P parameter Jacobian, computed by
  a vmap over T cotangents of one VJP.
* ``representation/<agg>``: Gramian-weighted aggregators on the Jacobian w.r.t.
  the shared features; needs the model to ``perturb("shared_features", ...)``
  (null with a reason when it does not).
* ``loop/<agg>``: the baseline of PyTorch MTL libraries: T per-task gradients
  by a Python loop of T ``jax.grad`` calls (unrolled in the jitted step),
  then the same aggregation. ``loop_vjp/<agg>`` (with --loop-vjp) shares one
  forward pass between the T backward passes (``backward(retain_graph=True)``);
  XLA's CSE merges loop's T identical forward passes, so both compile to the
  same FLOPs. By default every aggregator's loop runs at T = 8, only
  ``loop/mean`` at the other T (compile time).

Targets (issue 6), at T = 8: representation methods <= 1.3x EW; Jacobian
methods <= 0.5x their loop baseline. Memory: XLA's buffer assignment
(``compiled.memory_analysis()``) of each step, Jacobian path vs EW: ``temp``
(scratch: activations, the T x P Jacobian) and ``total`` (arguments + outputs -
donated aliases + temp). Ratios are medians of per-repeat ratios.

Prints one JSON object on stdout:
  {"benchmark", "config", "num_tasks", "step_time_ms": {T: {method: ms|null}},
   "ratio_vs_ew", "ratio_vs_loop": {T: {"jacobian/<agg>": step / step(loop/<agg>)}},
   "memory_bytes", "memory_jacobian_over_ew", "targets", "target_met", "skipped", "compile_s", ...}
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from mtl_jax.weighting import gramian_strategy, jacobian_strategy, strategy  # noqa: E402
from mtl_jax.weighting.base import gramian  # noqa: E402

TARGET_T = 8
TARGET_REPRESENTATION = 1.3   # step(representation method) / step(EW)
TARGET_JACOBIAN = 0.5         # step(jacobian method) / step(loop of T backward passes)
LOSS_METHODS = ("uncertainty", "dwa", "gradnorm", "rlw", "famo")
JACOBIAN_METHODS = ("mean", "upgrad", "mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g",
                    "aligned_mtl", "graddrop", "dualproj")
REPRESENTATION_METHODS = ("mgda", "upgrad")


class LoopCombiner(jacobian_strategy.JacobianStrategy):
  """The Jacobian path with the T task gradients from T separate backward passes in a
  Python loop (what PyTorch MTL libraries do), then the same aggregation.

  ``recompute_forward``: each task by its own ``jax.grad`` (forward included), else one
  forward pass and T calls of its VJP (``backward(retain_graph=True)``). The benchmark
  has no regularizer, so none is differentiated.
  """

  recompute_forward = True

  @classmethod
  def like(cls, jacobian: jacobian_strategy.JacobianStrategy) -> "LoopCombiner":
    return cls(jacobian.aggregator, jacobian.num_tasks, jacobian.shared_mask)

  def gradients(self, problem, params, wstate, rng):
    del wstate
    n = self.num_tasks
    if self.recompute_forward:
      rows = [jax.grad(lambda p, t=t: problem.weighted(p)[0][t])(params) for t in range(n)]
      wl, (per_task, reg) = problem.weighted(params)
    else:
      wl, vjp_fn, (per_task, reg) = jax.vjp(problem.weighted, params, has_aux=True)
      eye = jnp.eye(n, dtype=wl.dtype)
      rows = [vjp_fn(eye[t])[0] for t in range(n)]
    per_task_grads = jax.tree.map(lambda *g: jnp.stack(g), *rows)
    jac = strategy.flatten_rows(per_task_grads, self.shared_mask)
    shared = jacobian_strategy.unflatten_row(self.aggregator(jac, rng), per_task_grads,
                                              self.shared_mask)
    summed = jax.tree.map(lambda g: g.sum(0), per_task_grads)
    grads = jax.tree.map(lambda m, s, t: s if m else t, self.shared_mask, shared, summed)
    metrics = {"task_loss": per_task, "regularizer": reg, "loss": jnp.sum(wl) + reg}
    metrics.update(gramian_strategy.gram_stats(gramian(jac)))
    return grads, None, metrics


class LoopVJPCombiner(LoopCombiner):
  recompute_forward = False


def methods_for(t: int, args, has_features: bool):
  """{name: (kind, weighting config, combiner class)} timed at T = t; {name: reason} skipped."""
  out, skipped = {"ew": ("ew", None, None)}, {}
  for m in LOSS_METHODS:
    out[f"loss/{m}"] = ("loss", {"name": m}, None)
  for a in JACOBIAN_METHODS:
    out[f"jacobian/{a}"] = ("jacobian", {"aggregator": a, "mode": "jacobian"}, None)
  for a in REPRESENTATION_METHODS:
    name = f"representation/{a}"
    if has_features:
      out[name] = ("representation", {"aggregator": a, "mode": "representation"}, None)
    else:
      skipped[name] = ("the model exposes no shared features: HardSharing does not call "
                       "self.perturb(SHARED_FEATURES, features), so mode='representation' "
                       "cannot run (RepresentationStrategy raises at trace time)")
  loop_aggs = JACOBIAN_METHODS if (args.loop_all_t or t == TARGET_T) else ("mean",)
  for a in loop_aggs:
    cfg = {"aggregator": a, "mode": "jacobian"}
    out[f"loop/{a}"] = ("loop", cfg, LoopCombiner)
    if args.loop_vjp:
      out[f"loop_vjp/{a}"] = ("loop_vjp", cfg, LoopVJPCombiner)
  if args.methods:
    keep = [s.strip() for s in args.methods.split(",")]
    match = lambda n: any(n == k or n.startswith(k + "/") or n.endswith("/" + k) for k in keep)  # noqa: E731
    out = {n: v for n, v in out.items() if n == "ew" or match(n)}
    skipped = {n: v for n, v in skipped.items() if match(n)}
  return out, skipped


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=5, help="timed repeats per T (median reported)")
  p.add_argument("--steps", type=int, default=0,
                 help="steps per repeat (0: about --repeat-s seconds of work per timer)")
  p.add_argument("--repeat-s", type=float, default=0.15, help="seconds per timer per repeat")
  p.add_argument("--quick", action="store_true", help="small sizes, few methods: a smoke run")
  p.add_argument("--num-tasks", default=None, help="comma-separated T values (default 2,8,32)")
  p.add_argument("--methods", default=None,
                 help="comma-separated subset, e.g. 'upgrad,loss/famo' (EW always runs)")
  p.add_argument("--loop-all-t", action="store_true",
                 help="loop baseline of every aggregator at every T (default: at T=8 only; "
                      "loop/mean at the other T)")
  p.add_argument("--loop-vjp", action="store_true",
                 help="also time loop_vjp/<agg> (one shared forward pass)")
  args = p.parse_args(argv)

  if args.quick:
    ts, input_dim, trunk, batch = [2], 16, (32, 32), 32
    repeats = min(args.repeats, 3)
    args.loop_all_t = True
    if args.methods is None:
      args.methods = "ew,jacobian/mgda,representation/mgda,loop/mgda"
  else:
    ts, input_dim, trunk, batch = [2, 8, 32], 256, (512, 512), 256
    repeats = args.repeats
  if args.num_tasks:
    ts = [int(t) for t in args.num_tasks.split(",")]

  step_ms, min_ms, compile_s, memory, cost, skipped, kinds, samples = {}, {}, {}, {}, {}, {}, {}, {}
  steps_used = {}
  for t in ts:
    config = {
        "tasks": common.binary_tasks(t),
        "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": trunk}},
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "param_groups": [(".*", 1.0)],
        "batch_size": batch,
        "input_shape": (input_dim,),
    }
    base = common.build(config, host_init=args.quick)
    batch_arrays = common.random_batch(base.specs, batch, base.input_shape, seed=t)
    has_features = common.shared_feature_shape(base.model, base.input_shape, batch) is not None
    methods, skip = methods_for(t, args, has_features)
    timers, key = {}, str(t)
    compile_s[key], memory[key], cost[key] = {}, {}, {}
    for name, (kind, wcfg, cls) in methods.items():
      kinds[name] = kind
      t0 = time.perf_counter()
      try:
        timer = common.StepTimer(common.with_weighting(base, wcfg, cls), batch_arrays)
      except Exception as e:  # noqa: BLE001 -- record and go on
        skip[name] = f"{type(e).__name__}: {e}"[:500]
        common.log(f"T={t} {name}: FAILED {skip[name]}")
        continue
      timers[name] = timer
      compile_s[key][name] = round(time.perf_counter() - t0, 3)
      memory[key][name] = common.memory_stats(timer.compiled)
      cost[key][name] = timer.cost()
      common.log(f"T={t} {name}: compiled in {compile_s[key][name]:.2f}s, "
                 f"temp {memory[key][name].get('temp', 0) / 2**20:.1f} MiB")
    for name, reason in skip.items():
      kinds.setdefault(name, name.split("/")[0])
    skipped[key] = skip
    for tm in timers.values():
      tm.run(1)  # warm-up: the first call of a fresh executable is slow
    steps = {n: args.steps or (1 if args.quick else common.steps_for(tm, args.repeat_s, cap=50))
             for n, tm in timers.items()}
    steps_used[key] = steps
    times = common.time_interleaved_each(timers, repeats, steps, warmup=0)
    step_ms[key] = {n: round(times[n]["median_ms"], 4) if n in times else None
                    for n in list(methods) + [n for n in skip if n not in methods]}
    min_ms[key] = {n: round(v["min_ms"], 4) for n, v in times.items()}
    samples[key] = {n: v["samples_ms"] for n, v in times.items()}
    for n in times:
      common.log(f"T={t} {n}: {times[n]['median_ms']:.3f} ms/step")

  def paired(key, a, b):
    s = samples[key]
    return round(common.paired_ratio(s[a], s[b]), 4) if a in s and b in s else None

  ratio_vs_ew, ratio_vs_loop, ratio_vs_loop_vjp, mem_ratio = {}, {}, {}, {}
  for key in step_ms:
    ratio_vs_ew[key] = {n: paired(key, n, "ew") for n in step_ms[key] if n != "ew"}
    ratio_vs_loop[key] = {}
    for n in step_ms[key]:  # each aggregator vs the loop with the same aggregation
      agg = n.split("/", 1)[-1]
      if kinds.get(n) == "jacobian" and f"loop/{agg}" in samples[key]:
        ratio_vs_loop[key][n] = paired(key, n, f"loop/{agg}")
        if f"loop_vjp/{agg}" in samples[key]:
          ratio_vs_loop_vjp.setdefault(key, {})[n] = paired(key, n, f"loop_vjp/{agg}")
    m = memory[key]
    if m.get("ew", {}).get("temp"):
      mem_ratio[key] = {"ew_temp_MiB": round(m["ew"]["temp"] / 2**20, 3),
                        "ew_total_MiB": round(m["ew"]["total"] / 2**20, 3)}
      for kind in ("jacobian", "representation", "loop"):  # one method each: the path's cost
        names = [n for n in m if kinds.get(n) == kind]
        names.sort(key=lambda n: (not n.endswith("/mean"), not n.endswith("/upgrad")))
        for n in names[:1]:
          mem_ratio[key][n] = {
              "temp_MiB": round(m[n]["temp"] / 2**20, 3),
              "temp_over_ew": round(common.ratio(m[n]["temp"], m["ew"]["temp"]), 3),
              "total_over_ew": round(common.ratio(m[n]["total"], m["ew"]["total"]), 3)}

  target_t = ts[-1] if args.quick else TARGET_T  # quick: the checks run, at its one T
  tkey = str(target_t)
  rep, jac = {"at_T": target_t, "target": f"<= {TARGET_REPRESENTATION}"}, {
      "at_T": target_t, "target": f"<= {TARGET_JACOBIAN}"}
  if tkey in ratio_vs_ew:
    rep_r = {n: r for n, r in ratio_vs_ew[tkey].items() if kinds.get(n) == "representation"}
    rep["ratios"] = rep_r
    vals = [r for r in rep_r.values() if r is not None]
    rep["worst"] = max(vals) if vals else None
    rep["met"] = bool(all(r <= TARGET_REPRESENTATION for r in vals)) if vals else None
    if not vals:
      rep["reason"] = next((v for n, v in skipped[tkey].items() if n.startswith("representation")),
                           "no representation method ran")
    jac_r = dict(ratio_vs_loop[tkey])
    jac["ratios"] = jac_r
    vals = [r for r in jac_r.values() if r is not None]
    jac["worst"] = max(vals) if vals else None
    jac["met"] = bool(all(r <= TARGET_JACOBIAN for r in vals)) if vals else None
    jac["methods_met"] = sorted(n for n, r in jac_r.items() if r is not None and r <= TARGET_JACOBIAN)
  else:
    rep["met"] = jac["met"] = None
    rep["reason"] = jac["reason"] = f"T={target_t} not run"
  flags = [x["met"] for x in (rep, jac) if x["met"] is not None]

  common.emit({
      "benchmark": "weighting_step_time",
      "config": {"input_dim": input_dim, "trunk": list(trunk), "batch_size": batch,
                 "sharing": "hard", "tasks": "binary", "optimizer": "adam",
                 "repeats": repeats, "steps_per_repeat": steps_used, "quick": args.quick},
      "num_tasks": ts,
      "methods": kinds,
      "step_time_ms": step_ms,
      "step_time_min_ms": min_ms,
      "ratio_vs_ew": ratio_vs_ew,
      "ratio_vs_loop": ratio_vs_loop,
      **({"ratio_vs_loop_vjp": ratio_vs_loop_vjp} if ratio_vs_loop_vjp else {}),
      "memory_bytes": memory,
      "memory_jacobian_over_ew": mem_ratio,
      "targets": {"representation_vs_ew": rep, "jacobian_vs_loop": jac},
      "target_met": bool(flags and all(flags)) if flags else None,
      "skipped": skipped,
      "compile_s": compile_s,
      "xla_cost": cost,
      "environment": common.environment(),
  })


if __name__ == "__main__":
  main()
