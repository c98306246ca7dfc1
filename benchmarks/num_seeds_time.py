"""Wall time of N seeds as one vmapped program vs N separate runs.

``config.num_seeds = N`` trains N replicas (seeds 0..N-1) in one jitted
program: one compile, one dispatch per step. The baseline is N sequential
``train_and_evaluate`` runs with num_seeds=1, measured two ways side by side:

* warm process (``warm_process``): batched and sequential runs all in ONE
  Python process that has already imported JAX and run each kind once
  untimed, as ``sweep.run_grid`` runs a study's cells; this isolates what
  vmapping saves (compiles and per-step dispatch), not start-up.
* fresh processes (``wall_s``, the original measure): each run is a fresh
``python`` process (import, data, compile, train, final eval, checkpoint), as a
user launching them experiences it, in its own temporary workdir, with JAX's
persistent compilation cache disabled (it would make every run after the first
artificially cheap). When ``--sequential-runs`` K < N, K runs are timed and the
total is extrapolated linearly to N (stated in the JSON). Batched and
sequential runs are interleaved per repeat; medians are reported.
Target on CPU: time(num_seeds=N) / time(N sequential runs) <= 0.25.

Prints one JSON object on stdout:
  {"benchmark", "config", "wall_s": {"batched", "sequential_per_run", "sequential_total"},
   "ratio", "ratio_paired_median", "warm_process": {"wall_s", "ratio", ...},
   "extrapolated", "target", "target_met", ...}
``target_met`` is judged on the fresh-process ratio, as before; the warm
ratio is reported beside it.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = 0.25

# One run: quickstart shrunk (tests/conftest.py tiny_config), eval once at the end.
_DRIVER = """
import json, sys, time
t0 = time.perf_counter()
from configs import quickstart
from mtl_jax import train
overrides, workdir = json.loads(sys.argv[1]), sys.argv[2]
c = quickstart.get_config()
c.model.trunk.features = tuple(overrides.pop("features"))
for k, v in overrides.items():
  c[k] = v
t1 = time.perf_counter()
train.train_and_evaluate(c, workdir)
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "train_and_evaluate_s": t2 - t1}))
"""


# All runs in one process, as sweep.run_grid runs a study: each kind runs once
# untimed, then per repeat the batched run and K sequential runs, interleaved.
_WARM_DRIVER = """
import json, sys, time
from configs import quickstart
from mtl_jax import train
base, n, k, repeats, tmp = json.loads(sys.argv[1])

def run(seed, num_seeds, tag):
  c = quickstart.get_config()
  o = dict(base)
  c.model.trunk.features = tuple(o.pop("features"))
  for key, v in o.items():
    c[key] = v
  c.seed, c.num_seeds = seed, num_seeds
  t0 = time.perf_counter()
  train.train_and_evaluate(c, f"{tmp}/{tag}")
  return time.perf_counter() - t0

run(0, n, "warm_batched")
run(0, 1, "warm_single")
batched, totals, runs = [], [], []
for r in range(repeats):
  for kind in (["b", "s"] if r % 2 == 0 else ["s", "b"]):
    if kind == "b":
      batched.append(run(0, n, f"b{r}"))
    else:
      ts = [run(i % n, 1, f"s{r}_{i}") for i in range(k)]
      runs += ts
      totals.append(sum(ts) * n / k)
print(json.dumps({"batched": batched, "sequential_total": totals, "sequential_runs": runs}))
"""


def run_warm(base, n, k, repeats, tmp):
  """The warm-process comparison in one child (same env as the fresh runs)."""
  proc = subprocess.run([sys.executable, "-c", _WARM_DRIVER,
                         json.dumps([base, n, k, repeats, tmp])],
                        cwd=ROOT, env=_env(), capture_output=True, text=True)
  if proc.returncode != 0:
    raise RuntimeError(f"warm-process runs failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _env():
  env = dict(os.environ)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
  return env


def run_once(overrides, tmp, tag):
  """One fresh-process training run; returns (wall seconds, inner timings)."""
  workdir = tempfile.mkdtemp(prefix=f"{tag}_", dir=tmp)
  t0 = time.perf_counter()
  proc = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(overrides), workdir],
                        cwd=ROOT, env=_env(), capture_output=True, text=True)
  wall = time.perf_counter() - t0
  if proc.returncode != 0:
    raise RuntimeError(f"run {tag} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
  inner = json.loads(proc.stdout.strip().splitlines()[-1])
  return wall, inner


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
  p.add_argument("--num-seeds", type=int, default=32, help="N")
  p.add_argument("--sequential-runs", type=int, default=4,
                 help="K sequential runs timed per repeat (extrapolated to N when K < N)")
  p.add_argument("--steps", type=int, default=200, help="num_train_steps per run")
  p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
  args = p.parse_args(argv)

  n, k, steps, repeats = args.num_seeds, args.sequential_runs, args.steps, args.repeats
  if args.quick:
    n, k, steps, repeats = 2, 1, 5, 1
  k = min(k, n)
  base = {"features": (32, 32), "num_train_steps": steps, "batch_size": 32,
          "eval_batch_size": 512, "log_every_steps": min(50, steps), "eval_every_steps": 0,
          "checkpoint_every_steps": 0, "progress_bar": False}

  batched, seq_runs, seq_totals, inner = [], [], [], {"batched": [], "sequential": []}
  next_seed = 0
  with tempfile.TemporaryDirectory(prefix="num_seeds_time_") as tmp:
    for r in range(repeats):
      order = ["batched", "sequential"] if r % 2 == 0 else ["sequential", "batched"]
      for kind in order:
        if kind == "batched":
          wall, t = run_once({**base, "seed": 0, "num_seeds": n}, tmp, f"batched{r}")
          batched.append(wall)
          inner["batched"].append(t)
          common.log(f"repeat {r}: num_seeds={n}: {wall:.2f}s")
        else:
          total = 0.0
          for _ in range(k):
            seed = next_seed % n
            next_seed += 1
            wall, t = run_once({**base, "seed": seed, "num_seeds": 1}, tmp, f"seed{seed}_{r}")
            seq_runs.append(wall)
            inner["sequential"].append(t)
            total += wall
            common.log(f"repeat {r}: seed {seed} (num_seeds=1): {wall:.2f}s")
          seq_totals.append(total * n / k)
    warm = run_warm(base, n, k, repeats, tmp)
    common.log(f"warm process: batched {warm['batched']}, sequential totals "
               f"{warm['sequential_total']}")

  b, s = statistics.median(batched), statistics.median(seq_totals)
  ratio = common.ratio(b, s)
  med = lambda xs, key: round(statistics.median(x[key] for x in xs), 4)  # noqa: E731
  common.emit({
      "benchmark": "num_seeds_time",
      "config": {**base, "features": list(base["features"]), "data": "mnist1d (quickstart)",
                 "num_seeds": n, "sequential_runs_timed": k, "repeats": repeats,
                 "quick": args.quick, "persistent_compilation_cache": "disabled",
                 "per_run": "fresh python process, own temp workdir"},
      "extrapolated": k < n,
      "extrapolation": (f"sequential_total = (sum of {k} timed runs) * {n}/{k} per repeat"
                        if k < n else None),
      "wall_s": {"batched": round(b, 4),
                 "sequential_per_run": round(statistics.median(seq_runs), 4),
                 "sequential_total": round(s, 4)},
      "samples_s": {"batched": [round(x, 4) for x in batched],
                    "sequential_runs": [round(x, 4) for x in seq_runs],
                    "sequential_total": [round(x, 4) for x in seq_totals]},
      "in_process_median_s": {
          kind: {"import": med(v, "import_s"), "train_and_evaluate": med(v, "train_and_evaluate_s")}
          for kind, v in inner.items()},
      "warm_process": {
          "what": "one process, each kind run once untimed first, as sweep.run_grid runs cells",
          "wall_s": {"batched": round(statistics.median(warm["batched"]), 4),
                     "sequential_per_run": round(statistics.median(warm["sequential_runs"]), 4),
                     "sequential_total": round(statistics.median(warm["sequential_total"]), 4)},
          "samples_s": {k_: [round(x, 4) for x in v] for k_, v in warm.items()},
          "ratio": round(common.ratio(statistics.median(warm["batched"]),
                                      statistics.median(warm["sequential_total"])), 4),
          "ratio_paired_median": round(common.paired_ratio(warm["batched"],
                                                           warm["sequential_total"]), 4)},
      "ratio": round(ratio, 4),
      "ratio_paired_median": round(common.paired_ratio(batched, seq_totals), 4),
      "target": f"time(num_seeds={n}) / time({n} sequential runs) <= {TARGET}",
      "target_met": bool(ratio <= TARGET),
      "environment": common.environment(),
  })


if __name__ == "__main__":
  main()
