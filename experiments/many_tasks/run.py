"""Many small related regression tasks (School-like): pooled vs independent vs
hard vs soft (L2-to-mean) vs trace-norm sharing, explained variance over splits.

  python experiments/many_tasks/run.py [--splits 3] [--school PATH]

Data: the ``many_tasks`` generator (139 tasks, 30-200 examples each, 27
features + bias, w_t = w0 + delta_t) or, with ``--school``, the real School
file (MALSAR's school.mat or the layout in mtl_jax/data/many_tasks.py); its
rows and report go to their own ``results_school-<sha>.{jsonl,md}``.
Protocol of docs/references.md: 75/25 within each task, split s = seed s,
EV pooled over all test points.

Selection on validation, never on test: every regularised family has a grid
of weights (GRIDS); each weight trains on 80% of each split's train rows
and is scored by the validation EV on the other 20% (``validation_fraction``),
averaged over the splits; the best weight then retrains on the whole train
split and only that run is scored on test. Rows are keyed by config and data
(``sweep.provenance``).

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
VALIDATION_FRACTION = 0.2  # of each task's train rows, for choosing weights
# family -> (sharing, trunk, regularizer name, select, pooled). Weights are per
# unit of the summed per-task mean losses (the library loss), on standardised data.
FAMILIES = {
    "pooled": ("hard", dict(name="identity"), None, None, True),
    "stl_ridge": ("single_task", dict(name="identity"), "l2", "heads/.*kernel", False),
    "hard_mlp16": ("hard", dict(name="mlp", features=(16,)), None, None, False),
    "l2_to_mean": ("soft", dict(name="identity"), "l2_to_mean", "heads/.*", False),
    # Intercepts free: the head bias is not selected (the bias column's kernel
    # entry still is, but the free head bias absorbs level differences).
    "l2_to_mean_kernel": ("soft", dict(name="identity"), "l2_to_mean", "heads/.*kernel", False),
    "trace_norm": ("soft", dict(name="identity"), "trace_norm", "heads/.*kernel", False),
}
# The weights searched on validation (the earlier, test-picked values included).
GRIDS = {"stl_ridge": (0.1, 0.3, 1.0), "l2_to_mean": (0.3, 3.0),
         "l2_to_mean_kernel": (1.0, 3.0, 10.0), "trace_norm": (1.0, 5.0)}
CELLS = list(FAMILIES)
PUBLISHED = [
    ("task clustering (Bakker & Heskes 2003)", "29.5 ± 0.4", "[2ry]"),
    ("regularised MTL to the mean (Evgeniou & Pontil 2004)", "≈34.3", "[2ry]"),
    ("independent SVR (same source)", "≈11.9", "[2ry]"),
    ("ridge check on a public copy: pooled / independent", "33.4 / 33.6", "[v]"),
    ("same: L2-to-mean / trace norm", "37.2 / 35.9", "[v]"),
]


def data_config(seed, pooled, validation=False):
  extra = dict(validation_fraction=VALIDATION_FRACTION) if validation else {}
  if SCHOOL:
    return dict(name="school", path=SCHOOL, seed=seed, pooled=pooled, **extra)
  return dict(name="many_tasks", seed=seed, pooled=pooled, **extra)


def make_config(family, seed, weight=None, validation=False):
  sharing, trunk, reg, select, pooled = FAMILIES[family]
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.data = data_config(seed, pooled, validation)
  names = ["score"] if pooled else [many_tasks.task_name(t) for t in range(NUM_TASKS)]
  c.tasks = [dict(name=n, kind="regression", metrics=("mse",)) for n in names]
  c.model = dict(sharing=sharing, trunk=trunk)
  c.regularizers = [dict(name=reg, weight=float(weight), select=select)] if reg else []
  c.optimizer = dict(name="adam", learning_rate=5e-2, schedule="cosine")
  c.num_train_steps = 150  # full batch
  return c


def setup():
  """The study-level record every row carries: which data the rows are about."""
  if SCHOOL:
    return {"data": f"school file {os.path.basename(SCHOOL)} sha256 {sweep.file_sha256(SCHOOL)}"}
  return {"data": "many_tasks generator (defaults)"}


def write_report(rows, minutes, md_path):
  final = [r for r in rows if "test_ev" in r]
  by_seed = {}
  for r in final:
    by_seed.setdefault(r["cell"], {})[r["seed"]] = 100 * r["test_ev"]
  stats = {c: sweep.mean_se(list(by_seed.get(c, {}).values())) for c in CELLS}
  done = [c for c in CELLS if stats[c][2]]
  if not done:
    raise ValueError(f"no test rows to report in {md_path}; run the study first")
  best = max(done, key=lambda c: stats[c][0])
  weight = {r["cell"]: r["weight"] for r in final}
  secs = {}  # rows of one program share its seconds: sum the distinct programs
  for c in {r["cell"] for r in rows}:
    secs[c] = sum({r["seconds"] for r in rows if r["cell"] == c})
  sel_secs = {fam: sum(secs.get(select_cell(fam, w), 0) for w in GRIDS.get(fam, ())) for fam in CELLS}
  data = (f"the School file `{os.path.basename(SCHOOL)}`" if SCHOOL
          else "the `many_tasks` generator (School-like, defaults)")
  lines = ["# Many tasks (School-like): explained variance over splits", "",
           f"Generated by `python experiments/many_tasks/run.py` on {data}. Test EV % pooled over "
           "all test points (1 − Σ_t n_t MSE_t / Σ_i (y_i − ȳ)², see "
           "`many_tasks.pooled_explained_variance`), mean ± s.e. over splits (split s = seed s, "
           f"75/25 within each task). Total wall time {minutes:.1f} min.", "",
           "Weights chosen on validation: each weight of a family's grid trained on 80% of each "
           "split's train rows and was scored on the other 20% (mean validation EV over the "
           "splits); the chosen weight then retrained on the whole train split, and only that "
           "run was scored on test. Test played no part in any choice.", "",
           "Paired: the same splits serve every method, so the difference to "
           "`stl_ridge` is taken split by split.", "",
           "| method | weight (chosen on validation) | test EV % | − stl_ridge (paired) | splits | "
           "s, test run / selection runs |", "|---|---|---|---|---|---|"]
  ref = by_seed.get("stl_ridge", {})
  for c in done:
    m, se, n = stats[c]
    mark = "**" if c == best else ""
    dm, dse, _ = sweep.paired_mean_se(by_seed[c], ref)
    diff = f"{dm:+.1f} ± {dse:.1f}" if c != "stl_ridge" and set(ref) & set(by_seed[c]) else ""
    w = "" if weight[c] is None else f"{weight[c]:g}"
    lines.append(f"| {c} | {w} | {mark}{m:.1f} ± {se:.1f}{mark} | {diff} | {n} | "
                 f"{secs[c]:.0f} / {sel_secs[c]:.0f} |")
  lines += ["", "## Selection (validation EV %, 20% of each split's train rows)", "",
            "| family | weight | validation EV % | splits | chosen |", "|---|---|---|---|---|"]
  for fam, (chosen, st) in selected_weights(rows, CELLS).items():
    for w, (m, se, n) in st.items():
      lines.append(f"| {fam} | {w:g} | {m:.1f} ± {se:.1f} | {n} | {'✓' if w == chosen else ''} |")
  lines += ["", "Published School numbers (docs/references.md; not our data):", "",
            "| method | EV % | tag |", "|---|---|---|"]
  lines += [f"| {a} | {b} | {t} |" for a, b, t in PUBLISHED]
  sweep.write_results_md(md_path, "\n".join(lines) + "\n\n", rows)
  _plot(stats, md_path.replace("results", "ev").replace(".md", ".png"))


def _plot(stats, png):
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
  fig.savefig(png, dpi=120)


def fit_splits(cell, family, weight, seeds, validation):
  """Trains one (family, weight) on every split in ``seeds`` at once; one row per split.

  Full batch: each split's whole train set is the batch at every step (the
  splits have equal sizes, so they stack). Scored on ``validation`` (carved
  from train) when choosing, else on test: per-task MSE and the pooled EV.
  """
  c = make_config(family, seeds[0], weight, validation)
  names = [t["name"] for t in c.tasks]
  pooled = FAMILIES[family][4]
  data = [build_dataset(data_config(s, pooled, validation)) for s in seeds]
  split = "validation" if validation else "test"
  stack = lambda dss: {"inputs": np.stack([d.inputs for d in dss]),  # noqa: E731
                       "labels": {n: np.stack([d.labels[n] for d in dss]) for n in names},
                       "mask": {n: np.stack([d.mask[n] for d in dss]) for n in names}}
  train_b = stack([d.train for d in data])
  eval_b = stack([getattr(d, split) for d in data])
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
  preds = jax.jit(jax.vmap(lambda p, x: model.apply({"params": p}, x)))(params, eval_b["inputs"])
  preds = jax.device_get(preds)
  seconds = round(time.time() - t0, 2)
  rows = []
  commit = sweep.git_commit(HERE)
  for i, s in enumerate(seeds):
    out = outputs_by_task(groups, {k: v[i] for k, v in preds.items()})
    ev_ds = getattr(data[i], split)
    mse = {n: float(np.mean((out[n][:, 0][ev_ds.mask[n]] - ev_ds.labels[n][ev_ds.mask[n]]) ** 2))
           for n in names}
    ev = many_tasks.pooled_explained_variance(ev_ds, mse)
    prov, flat = sweep.provenance(make_config(family, s, weight, validation), s, setup(), commit)
    rows.append({"cell": cell, "seed": s, "family": family, "weight": weight,
                 "seconds": seconds, f"{'val' if validation else 'test'}_ev": ev,
                 "final_train_loss": float(loss[i, -1]), "first_train_loss": float(loss[i, 0]),
                 split: {n: {"mse": v} for n, v in mse.items()}, "provenance": prov})
  return rows, flat


def select_cell(family, weight):
  return f"select/{family}={weight:g}"


def run_cell(path, cell, family, weight, seeds, validation, rows):
  """Fits the splits of ``cell`` not yet in ``rows`` (refusing rows of another config)."""
  commit = sweep.git_commit(HERE)
  todo = []
  for s in seeds:
    prov, flat = sweep.provenance(make_config(family, s, weight, validation), s, setup(), commit)
    if not sweep.done_or_mismatch(path, cell, s, prov, flat, rows):
      todo.append(s)
  if todo:
    new, flat = fit_splits(cell, family, weight, todo, validation)
    sweep.append_rows(path, new, flat)
    rows += new
    key = "val_ev" if validation else "test_ev"
    print(f"{cell}: {new[0]['seconds']:.0f}s, {key} "
          f"{sweep.mean_se([100 * r[key] for r in new])[:2]}", flush=True)


def selected_weights(rows, families):
  """{family: (weight, {weight: (mean, se, n) of validation EV %})}, best mean validation EV."""
  out = {}
  for fam in families:
    if fam not in GRIDS:
      out[fam] = (None, {})
      continue
    stats = {w: sweep.mean_se([100 * r["val_ev"] for r in rows
                               if r["cell"] == select_cell(fam, w)]) for w in GRIDS[fam]}
    if any(n == 0 for _, _, n in stats.values()):
      continue
    out[fam] = (max(GRIDS[fam], key=lambda w: stats[w][0]), stats)
  return out


def main():
  global SCHOOL
  parser = argparse.ArgumentParser()
  parser.add_argument("--splits", type=int, default=3)
  parser.add_argument("--school", default=None,
                      help="path to School data: MALSAR school.mat, or .csv/.npz (many_tasks.py)")
  parser.add_argument("--cells", default=",".join(CELLS))
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args()
  SCHOOL = args.school
  source = f"school-{sweep.file_sha256(SCHOOL, 8)}" if SCHOOL else None
  path = sweep.results_path(HERE, source)
  t0 = time.time()
  seeds = list(range(args.splits))
  families = args.cells.split(",")
  unknown = [f for f in families if f not in FAMILIES]
  if unknown:
    raise ValueError(f"--cells {unknown} unknown; valid: {CELLS}")
  if not args.report_only:
    rows = sweep.read_results(path)
    for fam in families:
      for w in GRIDS.get(fam, ()):
        run_cell(path, select_cell(fam, w), fam, w, seeds, True, rows)
      weight = selected_weights(rows, [fam])[fam][0]
      run_cell(path, fam, fam, weight, seeds, False, rows)
  rows = sweep.read_results(path)
  programs = {(r["cell"], r["seconds"]) for r in rows}  # one entry per vmapped program
  write_report(rows, sum(sec for _, sec in programs) / 60, sweep.results_path(HERE, source, "md"))
  print(f"{(time.time() - t0) / 60:.1f} min")


if __name__ == "__main__":
  main()
