"""Step time of FSDP and tensor-parallel parameter sharding against replicated parameters.

Runs itself in a child process with ``--devices`` simulated CPU devices (the
device count is fixed when JAX starts). One hard-shared MLP with 8 binary
tasks; per layout the library's own jitted step (``mtl_jax.run.setup``
shardings via ``build_program``) is timed interleaved with the others. On a
CPU the "devices" share the same cores and memory, so sharding can only add
collective overhead here: the ratio says what the layout costs, not what it
saves on an accelerator pod (per-device parameter bytes are reported too).

Prints one JSON object on stdout.
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUTS = {"replicated": ("replicated", 1), "fsdp": ("fsdp", 1),
           "tensor_parallel": ("tensor_parallel", 2)}


def child(args):
  os.environ["XLA_FLAGS"] = " ".join(  # the caller's flags, with this device count
      [f for f in os.environ.get("XLA_FLAGS", "").split()
       if not f.startswith("--xla_force_host_platform_device_count")]
      + [f"--xla_force_host_platform_device_count={args.devices}"])
  sys.path.insert(0, HERE)
  sys.path.insert(0, os.path.dirname(HERE))
  import common
  import jax
  import numpy as np
  from mtl_jax import parallel, sharding
  from mtl_jax.run import build_program

  width, batch = (64, 64) if args.quick else (args.width, args.batch)
  config = {"tasks": common.binary_tasks(8),
            "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": (width, width)}},
            "optimizer": {"name": "adam", "learning_rate": 1e-3}, "batch_size": batch,
            "input_shape": (width,)}
  timers, per_device = {}, {}
  batch_arrays = None
  for name, (preset, model) in LAYOUTS.items():
    mesh = parallel.make_mesh(None, model)
    cfg = common._config_dict(config, 0)  # noqa: SLF001 -- the benchmark's own helper
    cfg.sharding = preset
    program = build_program(cfg, np.zeros((1, width), np.float32), mesh)
    built = common.Built(program, (width,), batch, config)
    if batch_arrays is None:
      batch_arrays = common.random_batch(built.specs, batch, (width,))
    timers[name] = common.StepTimer(built, batch_arrays, mesh=mesh)  # setup's shardings
    per_device[name] = {"param_bytes_device0": sharding.per_device_bytes(program.state.params),
                        "param_bytes_total": sum(x.nbytes for x in
                                                 jax.tree.leaves(program.state.params))}
  times = common.time_interleaved_each(timers, args.repeats, {n: args.steps for n in timers})
  s = {n: v["samples_ms"] for n, v in times.items()}
  print(json.dumps({
      "step_time_ms": {n: round(v["median_ms"], 3) for n, v in times.items()},
      "ratio_vs_replicated": {n: round(common.paired_ratio(s[n], s["replicated"]), 3)
                              for n in s if n != "replicated"},
      "per_device": per_device}))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--width", type=int, default=1024)
  ap.add_argument("--batch", type=int, default=256)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--quick", action="store_true")
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.child:
    return child(args)
  env = dict(os.environ)
  cmd = [sys.executable, os.path.abspath(__file__), "--child", "--devices", str(args.devices),
         "--width", str(args.width), "--batch", str(args.batch), "--repeats", str(args.repeats),
         "--steps", str(args.steps)] + (["--quick"] if args.quick else [])
  proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
  if proc.returncode:
    sys.stderr.write(proc.stderr[-5000:])
    raise SystemExit(proc.returncode)
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  sys.path.insert(0, HERE)
  import common
  common.emit({"benchmark": "sharding_step_time",
               "config": {"devices": args.devices, "width": args.width, "batch": args.batch,
                          "tasks": 8, "repeats": args.repeats, "steps": args.steps,
                          "quick": args.quick, "backend": "cpu (simulated devices)"},
               **out})


if __name__ == "__main__":
  main()
