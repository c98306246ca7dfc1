"""Soft sharing (T stacked columns in one program) vs T separate single-task models.

Soft sharing vmaps T trunk+head columns and couples them with an l2_to_mean
regularizer on ``columns/.*``: one jitted train step for all T tasks. The
baseline is what a user does without it: T hard-sharing models with one task
each, jitted separately and stepped one after another. At small-model sizes
the separate loop pays T dispatches per step; the stacked program pays one.
Target on CPU (small size): step(soft) / sum(step(separate)) <= 0.5.

Prints one JSON object on stdout:
  {"benchmark", "config", "sizes": {name: {"step_time_ms", "compile_s", "xla_cost",
   "ratio", "ratio_paired_median"}}, "ratio", "target", "target_met", ...}
``single_task_stacked`` (the soft layout without the regularizer) is timed
alongside as a diagnostic: it separates the cost of stacking from the coupling.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

TARGET = 0.5


class SeparateTimer:
  """T compiled single-task steps, stepped one after another (as a Python loop would)."""

  def __init__(self, timers):
    self.timers = timers

  def run(self, n: int) -> float:
    states = [t.state for t in self.timers]
    common.block(states)
    t0 = common.time.perf_counter()
    out = None
    for _ in range(n):
      for i, t in enumerate(self.timers):
        states[i], out = t.compiled(states[i], t.batch)
    common.block((states, out))
    dt = common.time.perf_counter() - t0
    for t, s in zip(self.timers, states):
      t.state = s
    return dt / n


def _config(tasks, sharing, trunk, batch, input_dim, reg_weight):
  return {
      "tasks": tasks,
      "model": {"sharing": sharing, "trunk": {"name": "mlp", "features": tuple(trunk)}},
      "optimizer": {"name": "adam", "learning_rate": 1e-3},
      "batch_size": batch, "input_shape": (input_dim,),
      "regularizers": ([{"name": "l2_to_mean", "weight": reg_weight, "select": "columns/.*"}]
                       if sharing == "soft" else []),
  }


def _soft_timer(config, host_init):
  built = common.build(config, host_init=host_init)  # the config's regularizers included
  batch = common.random_batch(built.specs, built.batch_size, built.input_shape, seed=0)
  return common.StepTimer(built, batch), built


def measure(name, num_tasks, trunk, batch, input_dim, reg_weight, repeats, steps, quick):
  soft, soft_built = _soft_timer(
      _config(common.binary_tasks(num_tasks), "soft", trunk, batch, input_dim, reg_weight), quick)
  sep = []
  for i in range(num_tasks):
    built = common.build(_config([{"name": f"t{i}", "kind": "binary"}], "hard", trunk, batch,
                                 input_dim, 0.0), seed=i, host_init=quick)
    sep.append(common.StepTimer(built, common.random_batch(built.specs, batch, built.input_shape,
                                                           seed=i + 1)))
  # Diagnostic: the same stacked columns without the coupling term (sharing="single_task").
  stacked, _ = _soft_timer(
      _config(common.binary_tasks(num_tasks), "single_task", trunk, batch, input_dim, 0.0), quick)
  compile_s = {"soft": round(soft.lower_s + soft.compile_s, 4),
               "single_task_stacked": round(stacked.lower_s + stacked.compile_s, 4),
               "separate_total": round(sum(t.lower_s + t.compile_s for t in sep), 4)}
  costs = [t.cost() for t in sep]
  xla = {"soft": {**soft.cost(), "params": soft_built.num_params()},
         "single_task_stacked": stacked.cost(),
         "separate_total": {k: sum(c.get(k, 0.0) for c in costs) for k in costs[0]}}
  common.log(f"[{name}] compiled: {compile_s}; cost {xla}")
  runners = {"soft": soft, "separate": SeparateTimer(sep), "single_task_stacked": stacked}
  if not steps:
    steps = common.steps_for(soft)
  times = common.time_interleaved(runners, repeats, steps)
  r = common.ratio(times["soft"]["median_ms"], times["separate"]["median_ms"])
  common.log(f"[{name}] soft {times['soft']['median_ms']:.3f} ms, separate "
             f"{times['separate']['median_ms']:.3f} ms, ratio {r:.3f}")
  return {
      "num_tasks": num_tasks, "trunk": list(trunk), "batch_size": batch, "input_dim": input_dim,
      "steps_per_repeat": steps,
      "step_time_ms": {k: round(v["median_ms"], 4) for k, v in times.items()},
      "step_time_min_ms": {k: round(v["min_ms"], 4) for k, v in times.items()},
      "samples_ms": {k: v["samples_ms"] for k, v in times.items()},
      "compile_s": compile_s, "xla_cost": xla,
      "flops_ratio_soft_over_separate": (round(common.ratio(xla["soft"]["flops"],
                                                            xla["separate_total"]["flops"]), 4)
                                         if "flops" in xla["soft"] else None),
      "ratio": round(r, 4),
      "ratio_paired_median": round(common.paired_ratio(times["soft"]["samples_ms"],
                                                       times["separate"]["samples_ms"]), 4),
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=15, help="timed repeats (median reported)")
  p.add_argument("--steps", type=int, default=0,
                 help="steps per repeat (0: about 0.2 s of soft steps per repeat)")
  p.add_argument("--num-tasks", type=int, default=8)
  p.add_argument("--reg-weight", type=float, default=1e-3, help="l2_to_mean weight")
  p.add_argument("--no-large", action="store_true", help="skip the larger size")
  p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
  args = p.parse_args(argv)

  if args.quick:
    sizes = {"small": ((32, 32), 32, 16)}
    num_tasks, repeats = min(args.num_tasks, 3), min(args.repeats, 3)
  else:
    sizes = {"small": ((256, 256), 128, 64), "large": ((1024, 1024), 512, 256)}
    num_tasks, repeats = args.num_tasks, args.repeats
    if args.no_large:
      sizes.pop("large")
  results = {name: measure(name, num_tasks, trunk, batch, dim, args.reg_weight, repeats,
                           args.steps, args.quick)
             for name, (trunk, batch, dim) in sizes.items()}
  r = results["small"]["ratio"]
  common.emit({
      "benchmark": "soft_vs_separate_step_time",
      "config": {"num_tasks": num_tasks, "optimizer": "adam", "regularizer": "l2_to_mean",
                 "reg_weight": args.reg_weight, "repeats": repeats, "quick": args.quick,
                 "separate": "one hard-sharing single-task model per task, each jitted, "
                             "stepped sequentially; time = whole loop over T"},
      "sizes": results,
      "ratio": r,
      "target": f"small: step(soft) / sum(step(separate)) <= {TARGET}",
      "target_met": bool(r <= TARGET),
      "environment": common.environment(),
  })


if __name__ == "__main__":
  main()
