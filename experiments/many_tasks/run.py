"""Many small related regression tasks (School-like): pooled vs independent vs
hard vs soft (L2-to-mean) vs trace-norm sharing, explained variance over splits.

  python experiments/many_tasks/run.py [--splits 10] [--school PATH]

Data: the ``many_tasks`` generator (139 tasks, 30-200 examples each, 27
features + bias, w_t = w0 + delta_t) or, with ``--school``, the real School
file (layout in mtl_jax/data/many_tasks.py). Protocol of REFERENCES.md: 75/25
within each task, split s = seed s, EV pooled over all test points.

How it trains, and why not ``run_grid``: the library's program (model, loss,
regularizers, optimizer and train step, from ``mtl_jax.run.build_program``)
is used as is, but full-batch, inside one jitted ``lax.scan``, vmapped over
the splits. Two reasons. ``num_seeds`` replicas share one dataset (``config.data``
is built once), so they cannot hold different splits; and ``train_and_evaluate``
moves 2 x 139 label/mask arrays host->device every step, which ran at ~2-10
steps/s on this shared machine (~2 min per run) against seconds here.
Each (cell, split) is still one row of results.jsonl, like run_grid's.

Models are linear per task unless said otherwise (identity trunk + linear
head [T, 28, 1]): the regularisers act on the heads' stacked kernels.
"""

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from mtl_jax import sweep  # noqa: E402
from mtl_jax.data import many_tasks  # noqa: E402,F401  (registers many_tasks, school)
from mtl_jax.data.base import build_dataset  # noqa: E402
from mtl_jax.models import outputs_by_task  # noqa: E402
from mtl_jax.run import build_program  # noqa: E402

NUM_TASKS = 139
SCHOOL = None  # set by --school
# cell -> (sharing, trunk, regularizers, pooled). Weights are per unit of the
# summed per-task mean losses (the library loss), on standardised data.
METHODS = {
    "pooled": ("hard", dict(name="identity"), [], True),
    "stl_ridge=0.3": ("single_task", dict(name="identity"),
                      [dict(name="l2", weight=0.3, select="heads/.*kernel")], False),
    "hard_mlp16": ("hard", dict(name="mlp", features=(16,)), [], False),
    "l2_to_mean=0.3": ("soft", dict(name="identity"),
                       [dict(name="l2_to_mean", weight=0.3, select="heads/.*")], False),
    "l2_to_mean=3": ("soft", dict(name="identity"),
                     [dict(name="l2_to_mean", weight=3.0, select="heads/.*")], False),
    # Intercepts free: the head bias is not selected (the bias column's kernel
    # entry still is, but the free head bias absorbs level differences).
    "l2_to_mean_kernel=3": ("soft", dict(name="identity"),
                            [dict(name="l2_to_mean", weight=3.0, select="heads/.*kernel")], False),
    "trace_norm=1": ("soft", dict(name="identity"),
                     [dict(name="trace_norm", weight=1.0, select="heads/.*kernel")], False),
    "trace_norm=5": ("soft", dict(name="identity"),
                     [dict(name="trace_norm", weight=5.0, select="heads/.*kernel")], False),
}
CELLS = list(METHODS)
PUBLISHED = [
    ("task clustering (Bakker & Heskes 2003)", "29.5 ± 0.4", "[2ry]"),
    ("regularised MTL to the mean (Evgeniou & Pontil 2004)", "≈34.3", "[2ry]"),
    ("independent SVR (same source)", "≈11.9", "[2ry]"),
    ("ridge check on a public copy: pooled / independent", "33.4 / 33.6", "[v]"),
    ("same: L2-to-mean / trace norm", "37.2 / 35.9", "[v]"),
]


def data_config(seed, pooled):
  if SCHOOL:
    return dict(name="school", path=SCHOOL, seed=seed, pooled=pooled)
  return dict(name="many_tasks", seed=seed, pooled=pooled)


def make_config(cell, seed):
  sharing, trunk, regs, pooled = METHODS[cell]
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.data = data_config(seed, pooled)
  names = ["score"] if pooled else [many_tasks.task_name(t) for t in range(NUM_TASKS)]
  c.tasks = [dict(name=n, kind="regression", metrics=("mse",)) for n in names]
  c.model = dict(sharing=sharing, trunk=trunk)
  c.regularizers = regs
  c.optimizer = dict(name="adam", learning_rate=5e-2, schedule="cosine")
  c.num_train_steps = 150  # full batch
  return c


def pooled_ev(rows):
  """{cell: [EV % per split]} (EV pooled over all test points, stored per row)."""
  out = {}
  for r in rows:
    out.setdefault(r["cell"], []).append(100 * r["test_ev"])
  return out


def write_report(rows, minutes):
  ev = pooled_ev(rows)
  stats = {c: sweep.mean_se(ev.get(c, [])) for c in CELLS}
  best = max((c for c in CELLS if stats[c][2]), key=lambda c: stats[c][0])
  secs = {}  # rows of one program share its seconds: sum the distinct programs
  for c in {r["cell"] for r in rows}:
    secs[c] = sum({r["seconds"] for r in rows if r["cell"] == c})
  data = f"School file {SCHOOL}" if SCHOOL else "the `many_tasks` generator (School-like, defaults)"
  lines = ["# Many tasks (School-like): explained variance over splits", "",
           f"Generated by `python experiments/many_tasks/run.py` on {data}. Test EV % pooled over "
           "all test points (1 − Σ_t n_t MSE_t / Σ_i (y_i − ȳ)², see "
           "`many_tasks.pooled_explained_variance`), mean ± s.e. over splits (split s = seed s, "
           f"75/25 within each task). Total wall time {minutes:.1f} min.", "",
           "Paired: the same splits serve every method, so the difference to "
           "`stl_ridge=0.3` is taken split by split.", "",
           "| method | test EV % | − stl_ridge=0.3 (paired) | splits | train+eval s, all splits |",
           "|---|---|---|---|---|"]
  by_seed = {}
  for r in rows:
    by_seed.setdefault(r["cell"], {})[r["seed"]] = 100 * r["test_ev"]
  ref = by_seed.get("stl_ridge=0.3", {})
  for c in CELLS:
    m, se, n = stats[c]
    if n:
      mark = "**" if c == best else ""
      common = sorted(set(ref) & set(by_seed[c]))
      dm, dse, _ = sweep.mean_se([by_seed[c][s] - ref[s] for s in common])
      diff = f"{dm:+.1f} ± {dse:.1f}" if c != "stl_ridge=0.3" and common else ""
      lines.append(f"| {c} | {mark}{m:.1f} ± {se:.1f}{mark} | {diff} | {n} | {secs[c]:.0f} |")
  lines += ["", "Published School numbers (REFERENCES.md; not our data):", "",
            "| method | EV % | tag |", "|---|---|---|"]
  lines += [f"| {a} | {b} | {t} |" for a, b, t in PUBLISHED]
  sweep.write_results_md(os.path.join(HERE, "results.md"), "\n".join(lines) + "\n\n")
  _plot(stats)


def _plot(stats):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  cells = [c for c in CELLS if stats[c][2]]
  fig, ax = plt.subplots(figsize=(8, 3.6))
  ax.bar(range(len(cells)), [stats[c][0] for c in cells],
         yerr=[0 if stats[c][1] != stats[c][1] else stats[c][1] for c in cells], color="tab:blue")
  ax.set_xticks(range(len(cells)), cells, rotation=30, ha="right", fontsize=8)
  ax.set_ylabel("test EV % (pooled over test points)")
  lo = min(stats[c][0] for c in cells)
  ax.set_ylim(min(0, lo - 2), max(stats[c][0] for c in cells) + 3)
  fig.tight_layout()
  fig.savefig(os.path.join(HERE, "ev.png"), dpi=120)


def fit_splits(cell, seeds):
  """Trains ``cell`` on every split in ``seeds`` at once; returns one results row per split.

  Full batch: each split's whole train set is the batch at every step (the
  splits have equal sizes, so they stack). Test metrics: per-task MSE and the
  pooled EV.
  """
  c = make_config(cell, seeds[0])
  names = [t["name"] for t in c.tasks]
  data = [build_dataset(data_config(s, METHODS[cell][3])) for s in seeds]
  stack = lambda dss: {"inputs": np.stack([d.inputs for d in dss]),  # noqa: E731
                       "labels": {n: np.stack([d.labels[n] for d in dss]) for n in names},
                       "mask": {n: np.stack([d.mask[n] for d in dss]) for n in names}}
  train_b, test_b = stack([d.train for d in data]), stack([d.test for d in data])
  sample = train_b["inputs"][0, :1]
  program = build_program(c, sample)
  model, groups = program.model, program.groups
  # Each split's own init (key = its seed), as before the factory existed.
  params = jax.vmap(lambda k: model.init(k, sample)["params"])(
      jnp.stack([jax.random.PRNGKey(s) for s in seeds]))

  def run(p, key, batch):
    state = program.fresh_state(p, key)
    state, m = jax.lax.scan(lambda st, _: program.train_step(st, batch), state, None,
                            c.num_train_steps)
    return state.params, m["loss"]

  keys = jnp.stack([jax.random.PRNGKey(1000 + s) for s in seeds])
  t0 = time.time()
  params, loss = jax.jit(jax.vmap(run))(params, keys, train_b)
  preds = jax.jit(jax.vmap(lambda p, x: model.apply({"params": p}, x)))(params, test_b["inputs"])
  preds = jax.device_get(preds)
  seconds = round(time.time() - t0, 2)
  rows = []
  for i, s in enumerate(seeds):
    out = outputs_by_task(groups, {k: v[i] for k, v in preds.items()})
    test = data[i].test
    mse = {n: float(np.mean((out[n][:, 0][test.mask[n]] - test.labels[n][test.mask[n]]) ** 2))
           for n in names}
    ev = many_tasks.pooled_explained_variance(test, mse)
    rows.append({"cell": cell, "seed": s, "seconds": seconds, "test_ev": ev,
                 "final_train_loss": float(loss[i, -1]), "first_train_loss": float(loss[i, 0]),
                 "test": {n: {"mse": v} for n, v in mse.items()}})
  return rows


def main():
  global SCHOOL
  parser = argparse.ArgumentParser()
  parser.add_argument("--splits", type=int, default=10)
  parser.add_argument("--school", default=None, help="path to a School file (see many_tasks.py)")
  parser.add_argument("--cells", default=",".join(CELLS))
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args()
  SCHOOL = args.school
  path = os.path.join(HERE, "results.jsonl")
  t0 = time.time()
  if not args.report_only:
    done = {(r["cell"], r["seed"]) for r in sweep.read_results(path)}
    for cell in args.cells.split(","):
      todo = [s for s in range(args.splits) if (cell, s) not in done]
      if todo:
        rows = fit_splits(cell, todo)
        with open(path, "a") as f:
          f.writelines(json.dumps(r) + "\n" for r in rows)
        print(f"{cell}: {rows[0]['seconds']:.0f}s, EV "
              f"{sweep.mean_se([100 * r['test_ev'] for r in rows])[:2]}", flush=True)
  rows = sweep.read_results(path)
  programs = {(r["cell"], r["seconds"]) for r in rows}  # one entry per vmapped program
  write_report(rows, sum(sec for _, sec in programs) / 60)
  print(f"{(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
  main()
