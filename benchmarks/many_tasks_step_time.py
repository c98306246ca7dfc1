"""Train step time vs number of tasks on one MLP trunk (hard sharing).

Tasks of equal (kind, num_outputs) are stacked into one head tensor and one
loss, so going from 1 to 128 tasks should cost little more than the extra
head FLOPs. Target on CPU: step(T=128) / step(T=1) <= 2.0.

Prints one JSON object on stdout:
  {"benchmark", "config", "tasks", "step_time_ms": {T: ...}, "compile_s": {T: ...},
   "ratio_T{max}_over_T1", "target", "target_met", ...}
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

TARGET = 2.0


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=15, help="timed repeats per T (median reported)")
  p.add_argument("--steps", type=int, default=0,
                 help="steps per repeat (0: about 0.2 s of work per repeat)")
  p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
  p.add_argument("--tasks", default="binary", choices=["binary", "mixed"],
                 help="binary: T binary tasks (one stacked group); mixed: cycle of 4 kinds")
  p.add_argument("--num-tasks", default=None, help="comma-separated T values")
  args = p.parse_args(argv)

  if args.quick:
    ts = [1, 8]
    input_dim, trunk, batch = 16, (32, 32), 32
    repeats = min(args.repeats, 3)
  else:
    ts = [1, 8, 32, 128]
    input_dim, trunk, batch = 256, (512, 512), 256
    repeats = args.repeats
  if args.num_tasks:
    ts = [int(t) for t in args.num_tasks.split(",")]
  make_tasks = common.binary_tasks if args.tasks == "binary" else common.mixed_tasks

  timers, compile_s, info = {}, {}, {}
  for t in ts:
    config = {
        "tasks": make_tasks(t),
        "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": trunk}},
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "param_groups": [(".*", 1.0)],
        "batch_size": batch,
        "input_shape": (input_dim,),
    }
    built = common.build(config, host_init=args.quick)
    batch_arrays = common.random_batch(built.specs, batch, built.input_shape, seed=t)
    timer = common.StepTimer(built, batch_arrays)
    timers[str(t)] = timer
    compile_s[str(t)] = round(timer.lower_s + timer.compile_s, 4)
    info[str(t)] = {"groups": len(built.groups), "params": built.num_params(), **timer.cost()}
    common.log(f"T={t}: compiled in {compile_s[str(t)]:.2f}s, {info[str(t)]}")

  steps = args.steps or (2 if args.quick else common.steps_for(timers[str(ts[0])]))
  times = common.time_interleaved(timers, repeats, steps)
  for t in ts:
    common.log(f"T={t}: {times[str(t)]['median_ms']:.3f} ms/step")

  lo, hi = str(ts[0]), str(ts[-1])
  r = common.ratio(times[hi]["median_ms"], times[lo]["median_ms"])
  common.emit({
      "benchmark": "many_tasks_step_time",
      "config": {"input_dim": input_dim, "trunk": list(trunk), "batch_size": batch,
                 "tasks": args.tasks, "optimizer": "adam", "repeats": repeats,
                 "steps_per_repeat": steps, "quick": args.quick},
      "num_tasks": ts,
      "step_time_ms": {k: round(v["median_ms"], 4) for k, v in times.items()},
      "step_time_min_ms": {k: round(v["min_ms"], 4) for k, v in times.items()},
      "compile_s": compile_s,
      "xla_cost": info,
      f"ratio_T{hi}_over_T{lo}": round(r, 4),
      "ratio": round(r, 4),
      "ratio_paired_median": round(common.paired_ratio(times[hi]["samples_ms"],
                                                       times[lo]["samples_ms"]), 4),
      "target": f"<= {TARGET}",
      "target_met": bool(r <= TARGET),
      "environment": common.environment(),
  })


if __name__ == "__main__":
  main()
