"""Cost of the aggregators' solvers against forming the Gramian they solve on (issue 11).

Per T (default 8, 32, 128, 256), timed round-robin in one run (so machine noise hits
all alike), median of the repeats:

* ``gramian``: G = J Jᵀ of a T x P Jacobian, P = 130k (~ the MLP 100-256-256 of the
  issue's step benchmark), as ``base.gramian`` computes it; ``mean``: the `mean`
  aggregator's direction wᵀJ on the same J.
* ``weights/<name>``: ``agg.weights(G)`` on a random T x T Gramian (rows of very
  different norms, a quarter conflicting with row 0): the solver alone.
* ``jacobian/<name>``: ``agg(J)`` on a random T x 100k Jacobian: Gramian + solver + wᵀJ.
* ``before/<name>``: ``weights(G)`` of the implementation on git ref ``--before``
  (default 2eebee5, the last commit before the batched solvers), loaded from
  ``git show`` into this process. Programs whose one call takes more than ``--slow-s``
  are timed by a single call outside the round-robin (said in ``before_single_call``);
  those expected to take minutes (the old O(T⁴) active-set QPs at T = 256) are skipped
  with the reason.

Target (issue 11, item 2): at T = 128 every ``weights/<name>`` <= 1x ``gramian``, so a
Gramian-path step costs <= 2x the mean's.

Prints one JSON object on stdout:
  {"benchmark", "config", "environment", "time_ms": {T: {row: ms}}, "ratio_vs_gramian":
   {T: {name: weights / gramian}}, "speedup_vs_before": {T: {name: before / weights}},
   "target", "target_met", "before_single_call", "skipped", "compile_s"}
"""

import argparse
import os
import subprocess
import sys
import time
import types

# IMTL-G/Aligned-MTL (eigh) and Nash-MTL (Cholesky) call LAPACK on T x T matrices, far too
# small for threads: on a busy machine OpenBLAS's spinning threads made eigh at T=128 15-250x
# slower (0.7 ms -> 11-190 ms, measured in this repo). One thread unless the caller says
# otherwise; the setting is reported. XLA's own matmuls (the Gramian) are not affected.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_var, "1")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mtl_jax.weighting import AGGREGATORS  # noqa: E402
from mtl_jax.weighting.base import gramian  # noqa: E402

SOLVERS = ("upgrad", "dualproj", "mgda", "cagrad", "nash_mtl", "pcgrad", "imtl_g", "aligned_mtl")
OLD_MODULES = ("qp", "upgrad", "dualproj", "cagrad", "nash_mtl", "mgda", "pcgrad", "imtl_g",
               "aligned_mtl")
# Old solvers that take minutes per call at these T (O(T⁴) sequential active set): skipped.
OLD_TOO_SLOW = {"upgrad": 128, "cagrad": 128}  # skipped above this T
TARGET_T, TARGET_RATIO = 128, 1.0
BEFORE_REF = "2eebee5"  # the last commit with the O(T⁴) active-set solvers (issue 11)


def load_before(ref):
  """{name: aggregator class} of mtl_jax/weighting at git ref `ref`, without registering."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  pkg = types.ModuleType("_before_weighting")
  sys.modules["_before_weighting"] = pkg
  classes = {}
  for mod in OLD_MODULES:
    src = subprocess.run(["git", "show", f"{ref}:mtl_jax/weighting/{mod}.py"], cwd=root,
                         check=True, capture_output=True, text=True).stdout
    src = src.replace("mtl_jax.weighting.qp", "_before_weighting.qp")
    src = src.replace("@AGGREGATORS.register(", "@(lambda *_: (lambda c: c))(")
    module = types.ModuleType(f"_before_weighting.{mod}")
    exec(compile(src, f"{ref}:mtl_jax/weighting/{mod}.py", "exec"), module.__dict__)
    sys.modules[f"_before_weighting.{mod}"] = module
    setattr(pkg, mod, module)
  for name in SOLVERS:
    cls = AGGREGATORS.get(name)
    classes[name] = getattr(getattr(pkg, cls.__module__.rsplit(".", 1)[1]), cls.__name__)
  return classes


def random_gramian(t, seed=0):
  rng = np.random.default_rng(seed)
  jac = rng.standard_normal((t, 4 * t)) * 10.0 ** rng.uniform(-1, 1, (t, 1))
  jac[1:max(2, t // 4)] -= 1.5 * jac[:1]
  return jnp.asarray(jac @ jac.T / jac.shape[1], jnp.float32)


class Runner:
  """A compiled function and its arguments; run(n) returns seconds per call."""

  def __init__(self, fn, *args):
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    self.compiled = jitted.lower(*args).compile()
    self.compile_s = time.perf_counter() - t0
    self.args = args

  def run(self, n):
    t0 = time.perf_counter()
    for _ in range(n):
      out = self.compiled(*self.args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--num-tasks", default="8,32,128,256", help="comma-separated T values")
  p.add_argument("--params", type=int, default=130_000, help="P of the Gramian reference")
  p.add_argument("--jacobian-params", type=int, default=100_000, help="P of the J-based form")
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--repeat-s", type=float, default=0.1, help="seconds per row per repeat")
  p.add_argument("--before", default=BEFORE_REF,
                 help="git ref of the old solvers ('' skips them)")
  p.add_argument("--slow-s", type=float, default=1.0,
                 help="old programs slower than this per call are timed once, not interleaved")
  p.add_argument("--quick", action="store_true", help="T = 4, small P: a smoke run")
  args = p.parse_args(argv)
  ts = [int(x) for x in args.num_tasks.split(",")]
  if args.quick:
    ts, args.params, args.jacobian_params = [4], 2_000, 1_000
  before = load_before(args.before) if args.before else {}
  key = jax.random.key(0)
  result = {"benchmark": "solver_scale",
            "config": {"num_tasks": ts, "gramian_params": args.params,
                       "jacobian_params": args.jacobian_params, "repeats": args.repeats,
                       "before": args.before, "dtype": "float32",
                       "threads": {v: os.environ.get(v) for v in (
                           "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                           "XLA_FLAGS")},
                       "load_average_at_start": os.getloadavg()},
            "environment": common.environment(), "time_ms": {}, "ratio_vs_gramian": {},
            "speedup_vs_before": {}, "before_single_call": {}, "skipped": {}, "compile_s": {}}
  for t in ts:
    common.log(f"T={t}: compiling")
    rng = np.random.default_rng(t)
    jac_ref = jnp.asarray(rng.standard_normal((t, args.params)), jnp.float32)
    jac = jnp.asarray(rng.standard_normal((t, args.jacobian_params)), jnp.float32)
    gram = random_gramian(t)
    runners = {"gramian": Runner(gramian, jac_ref),
               "mean": Runner(lambda j: AGGREGATORS.get("mean")()(j), jac_ref)}
    for name in SOLVERS:
      agg = AGGREGATORS.get(name)()
      runners[f"weights/{name}"] = Runner(lambda g, a=agg: a.weights(g, key), gram)
      runners[f"jacobian/{name}"] = Runner(lambda j, a=agg: a(j, key), jac)
    single, skipped = {}, {}
    for name, cls in before.items():
      if t > OLD_TOO_SLOW.get(name, 1 << 30):
        skipped[f"before/{name}"] = (f"old O(T^4) active-set solver: minutes per call at T={t} "
                                     f"(measured {OLD_TOO_SLOW[name]}: see T={OLD_TOO_SLOW[name]})")
        continue
      runner = Runner(lambda g, a=cls(): a.weights(g, key), gram)
      once = runner.run(1)
      if once > args.slow_s:
        single[f"before/{name}"] = once * 1e3
      else:
        runners[f"before/{name}"] = runner
    result["compile_s"][t] = {k: round(r.compile_s, 2) for k, r in runners.items()}
    counts = {k: max(1, min(1000, round(args.repeat_s / max(r.run(1), 1e-6))))
              for k, r in runners.items()}
    common.log(f"T={t}: timing {len(runners)} rows round-robin")
    timed = common.time_interleaved_each(runners, args.repeats, counts)
    ms = {k: v["median_ms"] for k, v in timed.items()}
    ms.update(single)
    result["time_ms"][t] = dict(ms)
    result["before_single_call"][t] = sorted(single)
    result["skipped"][t] = skipped
    result["ratio_vs_gramian"][t] = {n: round(ms[f"weights/{n}"] / ms["gramian"], 4)
                                     for n in SOLVERS}
    result["speedup_vs_before"][t] = {n: round(ms[f"before/{n}"] / ms[f"weights/{n}"], 2)
                                      for n in SOLVERS if f"before/{n}" in ms}
    common.log(f"T={t}: gramian {ms['gramian']:.3f} ms, ratios {result['ratio_vs_gramian'][t]}")
  result["target"] = (f"weights/<name> <= {TARGET_RATIO}x gramian (P={args.params}) at "
                      f"T={TARGET_T}")
  if TARGET_T in ts:
    ratios = result["ratio_vs_gramian"][TARGET_T]
    result["target_met"] = {n: r <= TARGET_RATIO for n, r in ratios.items()}
  common.emit(result)


if __name__ == "__main__":
  main()
