"""Frozen trunk vs full fine-tuning: train step time on a compute-heavy trunk.

With ``param_groups = [("trunk/.*", None), (".*", 1.0)]`` the trunk's
parameters pass through ``stop_gradient``, so XLA should drop the trunk's
backward pass (both weight and activation gradients) and its optimizer update.
A trunk step is then only the forward pass: about 1/3 of fine-tuning's FLOPs.
Target on CPU: step(frozen) / step(full) <= 0.4.

Prints one JSON object on stdout:
  {"benchmark", "config", "step_time_ms": {"full", "frozen"}, "compile_s": {...},
   "ratio_frozen_over_full", "target", "target_met", "xla_cost": {...}, ...}
"""

import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

TARGET = 0.4
FROZEN_RULES = [("trunk/.*", None), (".*", 1.0)]
FULL_RULES = [(".*", 1.0)]


def hlo_op_counts(timer: common.StepTimer):
  """Counts of heavy ops in the optimized HLO (a pruned backward has fewer)."""
  try:
    text = timer.compiled.as_text()
  except Exception:  # noqa: BLE001 -- optional diagnostics
    return {}
  return {"dot": len(re.findall(r"\bdot\(", text)),
          "convolution": len(re.findall(r"\bconvolution\(", text))}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=15, help="timed repeats (median reported)")
  p.add_argument("--steps", type=int, default=0,
                 help="steps per repeat (0: about 0.3 s of work per repeat)")
  p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
  p.add_argument("--trunk", default="mlp", choices=["mlp", "cnn"])
  p.add_argument("--num-tasks", type=int, default=2)
  args = p.parse_args(argv)

  if args.trunk == "mlp":
    if args.quick:
      input_shape, trunk, batch = (32,), {"name": "mlp", "features": (64, 64)}, 32
    else:
      input_shape, batch = (1024,), 256
      trunk = {"name": "mlp", "features": (2048, 2048, 2048, 2048)}
  else:
    if args.quick:
      input_shape, batch = (40,), 16
      trunk = {"name": "cnn", "features": (8, 8), "kernel_sizes": (3, 3), "strides": (2, 2)}
    else:  # MNIST-1D-like sequences, wide channels, stride 1 so the trunk dominates
      input_shape, batch = (256,), 128
      trunk = {"name": "cnn", "features": (128, 128, 128), "kernel_sizes": (5, 3, 3),
               "strides": (1, 2, 2)}
  repeats = min(args.repeats, 3) if args.quick else args.repeats

  tasks = common.binary_tasks(max(1, args.num_tasks // 2)) + [
      {"name": f"c{i}", "kind": "multiclass", "num_outputs": 10}
      for i in range(args.num_tasks - max(1, args.num_tasks // 2))]
  timers, compile_s, info = {}, {}, {}
  for name, rules in (("full", FULL_RULES), ("frozen", FROZEN_RULES)):
    config = {
        "tasks": tasks,
        "model": {"sharing": "hard", "trunk": trunk},
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "param_groups": rules,
        "batch_size": batch,
        "input_shape": input_shape,
    }
    built = common.build(config, host_init=args.quick)
    batch_arrays = common.random_batch(built.specs, batch, built.input_shape, seed=0)
    timer = common.StepTimer(built, batch_arrays)
    timers[name] = timer
    compile_s[name] = round(timer.lower_s + timer.compile_s, 4)
    info[name] = {"params": built.num_params(),
                  "trainable_params": built.num_params(trainable_only=True),
                  **timer.cost(), "hlo_ops": hlo_op_counts(timer)}
    common.log(f"{name}: compiled in {compile_s[name]:.2f}s, {info[name]}")

  steps = args.steps or (2 if args.quick else common.steps_for(timers["full"], target_s=0.3))
  times = common.time_interleaved(timers, repeats, steps)
  for name in timers:
    common.log(f"{name}: {times[name]['median_ms']:.3f} ms/step")

  r = common.ratio(times["frozen"]["median_ms"], times["full"]["median_ms"])
  flops = {k: v.get("flops") for k, v in info.items()}
  common.emit({
      "benchmark": "frozen_trunk_step_time",
      "config": {"trunk": {k: list(v) if isinstance(v, tuple) else v for k, v in trunk.items()},
                 "input_shape": list(input_shape), "batch_size": batch,
                 "num_tasks": len(tasks), "optimizer": "adam",
                 "frozen_param_groups": [list(r_) for r_ in FROZEN_RULES],
                 "repeats": repeats, "steps_per_repeat": steps, "quick": args.quick},
      "step_time_ms": {k: round(v["median_ms"], 4) for k, v in times.items()},
      "step_time_min_ms": {k: round(v["min_ms"], 4) for k, v in times.items()},
      "compile_s": compile_s,
      "xla_cost": info,
      "xla_flops_ratio_frozen_over_full": (round(flops["frozen"] / flops["full"], 4)
                                           if flops.get("full") and flops.get("frozen") else None),
      "ratio_frozen_over_full": round(r, 4),
      "ratio": round(r, 4),
      "ratio_paired_median": round(common.paired_ratio(times["frozen"]["samples_ms"],
                                                       times["full"]["samples_ms"]), 4),
      "target": f"<= {TARGET}",
      "target_met": bool(r <= TARGET),
      "environment": common.environment(),
  })


if __name__ == "__main__":
  main()
