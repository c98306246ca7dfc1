"""Ma et al. (KDD 2018) synthetic study: shared-bottom vs OMoE vs MMoE, and the later
members of the family (CGC and PLE, Tang et al. 2020; DSelect-k, Hazimeh et al. 2021), as
task correlation p varies.

  python experiments/mmoe_synthetic/run.py [--seeds 10] [--family_seeds 5] [--steps 2000]

Each (model, p) cell is one ``num_seeds`` program (replica r = seed r: its own
init and data order; the data, and so the two tasks, are the same for all
replicas, from data seed 0). Shared-bottom is hard sharing whose width is
chosen so its parameter count matches MMoE's (docs/sharing.md). Also measures
the label correlation the generator gives for each p, to put beside
docs/references.md.

The learning rate is chosen on validation, per model: each of the paper's
grid LRS trains SELECT_SEEDS seeds at p=0.5 and the rate with the lowest
final validation MSE (the generator's validation split: its own draw of
inputs, never test) serves every p of that model. Test plays no part.
"""

import argparse
import json
import os
import sys

import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from configs import mmoe_synthetic as mmoe_config  # noqa: E402
from mtl_jax import sweep  # noqa: E402
from mtl_jax.data.synthetic import mmoe_pair  # noqa: E402

BASE_MODELS = ("shared_bottom", "omoe", "mmoe")
FAMILY = ("cgc", "ple", "dselect_k")  # --family_seeds each (seeds 0.., paired with MMoE's)
MODELS = BASE_MODELS + FAMILY
PS = (0.5, 1.0, 0.9)  # run order: the p=0.5 / p=1 comparisons first
CORR_PS = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
PAPER_CORR = {0.0: 0.00, 0.1: 0.04, 0.5: 0.22, 0.9: 0.46, 1.0: 1.00}  # docs/references.md [v]
TASKS = ("y1", "y2")
STEPS = 2000  # overridden by --steps; the value used is recorded in results.md
NUM_TRAIN = 100_000
LRS = (1e-4, 1e-3, 1e-2)  # the paper's grid; chosen per model on validation
SELECT_P, SELECT_SEEDS = 0.5, 3


def _moe(sharing):
  """The mixtures of configs/mmoe_synthetic.py: 8 experts of 16, towers of 8 (CGC and each PLE
  level: 4 shared + 2 per task; DSelect-k: per-example gates choosing k=2 of the 8)."""
  return mmoe_config.model_config(sharing)


def _hard(width):
  return dict(sharing="hard", trunk=dict(name="mlp", features=(width,)), head_hidden=(8,))


def param_counts():
  """{model: parameters} and the shared-bottom width closest to MMoE's count."""
  from mtl_jax import tasks
  from mtl_jax.models import build_model
  from mtl_jax.models.sharing import count_params
  groups = tasks.group_tasks(tasks.specs_from_config(
      [dict(name=t, kind="regression") for t in TASKS]))
  x = np.zeros((1, 100), np.float32)
  count = lambda m: count_params(build_model(ml_collections.ConfigDict(m), groups), x)  # noqa
  target = count(_moe("mmoe"))
  width = min(range(16, 256), key=lambda w: abs(count(_hard(w)) - target))
  counts = {m: count(_moe(m)) for m in ("omoe",) + FAMILY}
  return {"mmoe": target, **counts, "shared_bottom": count(_hard(width))}, width


def make_config(cell, seed, steps=None, width=None, lr=None):
  """``cell`` is "<model>/p<p>" (lr given) or "select/<model>/p<p>/lr<lr>"."""
  if cell.startswith("select/"):
    _, model, p, lr_txt = cell.split("/")
    cell, lr = f"{model}/{p}", float(lr_txt[2:])
  model, p = cell.split("/p")
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.data = dict(name="mmoe_synthetic", p=float(p), num_train=NUM_TRAIN, seed=0)
  c.tasks = [dict(name=t, kind="regression") for t in TASKS]
  if model == "shared_bottom":
    c.model = _hard(width or param_counts()[1])
  else:
    c.model = _moe(model)
  c.optimizer = dict(name="adam", learning_rate=float(lr))
  c.batch_size = 128
  c.eval_batch_size = 1000
  c.num_train_steps = steps or STEPS
  c.log_every_steps = 100
  c.eval_every_steps = 0
  c.checkpoint_every_steps = 0
  c.keep_checkpoints = 1
  return c


CELLS = [f"{m}/p{p}" for p in PS for m in MODELS]
SELECT_CELLS = {m: [f"select/{m}/p{SELECT_P}/lr{lr:g}" for lr in LRS] for m in MODELS}


def chosen_lr(rows, model):
  """(lr, {lr: (mean, se, n)}) with the lowest mean final validation MSE (mean of y1, y2)."""
  stats = {}
  for lr, cell in zip(LRS, SELECT_CELLS[model]):
    v = [np.mean([r["validation"][t]["mse"] for t in TASKS]) for r in rows if r["cell"] == cell]
    stats[lr] = sweep.mean_se(v)
  if any(n == 0 for _, _, n in stats.values()):
    return None, stats
  return min(LRS, key=lambda lr: stats[lr][0]), stats


def label_correlation(n=20_000, seeds=5):
  """{p: (mean, s.e.)} of the Pearson correlation of y1 and y2 over weight/data seeds."""
  out = {}
  for p in CORR_PS:
    r = [np.corrcoef(*mmoe_pair(n, p, weights_seed=s, data_seed=100 + s)[1:])[0, 1]
         for s in range(seeds)]
    out[p] = sweep.mean_se(r)[:2]
  return out


def _test_mse(rows):
  """{cell: {"y1": [...], "y2": [...], "mean": [...]}} of final test MSE per replica."""
  out = {}
  for r in rows:
    if r["cell"].startswith("select/"):
      continue
    d = out.setdefault(r["cell"], {"y1": [], "y2": [], "mean": []})
    v = [r["test"][t]["mse"] for t in TASKS]
    d["y1"].append(v[0])
    d["y2"].append(v[1])
    d["mean"].append(float(np.mean(v)))
  return out


def _curve(rows, cell):
  """(steps, replica-mean per-task train MSE), kept in the cell's rows by run_grid."""
  for r in rows:
    c = r.get("train_curves_replica_mean", {})
    if r["cell"] == cell and "loss" in c:
      return np.asarray(c["step"]), np.mean([c["loss"][t] for t in TASKS], axis=0)
  return None


def _fmt(values):
  m, se, n = sweep.mean_se(values)
  return f"{m:.3f} ± {se:.3f}" if n else ""


def _by_seed(rows, cell):
  """{seed: final test MSE, mean of y1 and y2} of ``cell``."""
  return {r["seed"]: float(np.mean([r["test"][t]["mse"] for t in TASKS]))
          for r in rows if r["cell"] == cell}


def _paired(rows, a, b, p):
  """Mean ± s.e. over the seeds both ran of (a - b) at p, and that seed count."""
  m, se, n = sweep.paired_mean_se(_by_seed(rows, f"{a}/p{p}"), _by_seed(rows, f"{b}/p{p}"))
  return f"{m:+.3f} ± {se:.3f} ({n})" if n else ""


def write_report(rows, steps, width, counts, corr):
  mse = _test_mse(rows)
  seeds = {c: len(v["mean"]) for c, v in mse.items()}
  secs = {r["cell"]: r["seconds"] for r in rows}
  lrs = {r["cell"]: r["lr"] for r in rows if "lr" in r}
  lines = ["# MMoE synthetic study (Ma et al., KDD 2018)", "",
           "Generated by `python experiments/mmoe_synthetic/run.py` from results.jsonl. "
           f"Setup: {NUM_TRAIN:,} train / 1,000 test examples (data seed 0 for every run), "
           f"batch 128, Adam at the learning rate chosen on validation (below), **{steps} steps**; "
           "replica r of a cell = seed r (init and data order). Final test MSE, mean ± s.e. over "
           "seeds.", "",
           f"## Learning rate, chosen on validation (p={SELECT_P}, {SELECT_SEEDS} seeds, final "
           "validation MSE, mean of y1 and y2)", "",
           "| model | " + " | ".join(f"lr {lr:g}" for lr in LRS) + " | chosen |",
           "|---|" + "---|" * len(LRS) + "---|"]
  for m in MODELS:
    lr, st = chosen_lr(rows, m)
    lines.append(f"| {m} | " + " | ".join(
        f"{st[x][0]:.3f} ± {st[x][1]:.3f}" if st[x][2] else "" for x in LRS)
        + f" | {'' if lr is None else f'{lr:g}'} |")
  lines += ["",
           "## Label correlation vs p (generator, n=20k, 5 seeds)", "",
           "| p | Pearson r (ours) | docs/references.md |", "|---|---|---|"]
  for p in CORR_PS:
    m, se = corr[p]
    ref = f"{PAPER_CORR[p]:.2f}" if p in PAPER_CORR else ""
    lines.append(f"| {p} | {m:.3f} ± {se:.3f} | {ref} |")
  lines += ["", "## Models", "",
            f"Parameters: MMoE {counts['mmoe']:,}, OMoE {counts['omoe']:,}, shared-bottom "
            f"{counts['shared_bottom']:,} (hidden width {width}, towers of 8); CGC "
            f"{counts['cgc']:,} (4 shared + 2 per task), PLE {counts['ple']:,} (two such "
            f"levels), DSelect-k {counts['dselect_k']:,} (per-example gates, k = 2 of 8).", "",
            "| model | p | lr | test MSE y1 | test MSE y2 | test MSE mean | s.d. of mean | seeds | "
            "program s |", "|---|---|---|---|---|---|---|---|---|"]
  for p in sorted(PS):
    for m in MODELS:
      c = f"{m}/p{p}"
      if c in mse:
        lines.append(f"| {m} | {p} | {lrs.get(c, 0):g} | {_fmt(mse[c]['y1'])} | {_fmt(mse[c]['y2'])} | "
                     f"{_fmt(mse[c]['mean'])} | {np.std(mse[c]['mean'], ddof=1):.3f} | "
                     f"{seeds[c]} | {secs[c]:.0f} |")
  lines += ["", "## The rest of the family against MMoE and shared-bottom, paired by seed", "",
            "Final test MSE (mean of y1, y2), difference mean ± s.e. over the seeds both ran "
            "(count in brackets; replica r of every cell is seed r on the same data, so the "
            "pairs share init seed and batch order). Negative: the first model is better.", "",
            "| p | " + " | ".join(f"{m} − mmoe | {m} − shared_bottom" for m in FAMILY) + " |",
            "|---|" + "---|---|" * len(FAMILY)]
  for p in sorted(PS):
    lines.append(f"| {p} | " + " | ".join(
        f"{_paired(rows, m, 'mmoe', p)} | {_paired(rows, m, 'shared_bottom', p)}"
        for m in FAMILY) + " |")
  sweep.write_results_md(os.path.join(HERE, "results.md"), "\n".join(lines) + "\n\n![curves and spread](mmoe.png)\n\n", rows)
  _plot(rows, mse)


def _plot(rows, mse):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  ps = sorted(PS)
  colors = {"shared_bottom": "tab:blue", "omoe": "tab:orange", "mmoe": "tab:green",
            "cgc": "tab:red", "ple": "tab:purple", "dselect_k": "tab:brown"}
  fig, axes = plt.subplots(2, len(ps), figsize=(5.0 * len(ps), 7.6))
  for j, p in enumerate(ps):
    ax = axes[0, j]
    for m in MODELS:
      c = f"{m}/p{p}"
      curve = _curve(rows, c)
      if curve is None:
        continue
      ax.plot(*curve, color=colors[m], label=f"{m} train (replica mean)")
      if c in mse:
        mean, se, _ = sweep.mean_se(mse[c]["mean"])
        ax.errorbar([curve[0][-1]], [mean], yerr=[se], fmt="o", color=colors[m], capsize=3)
    ax.set_yscale("log")
    ax.set_title(f"p = {p}")
    ax.set_xlabel("step")
    ax.set_ylabel("per-task MSE (line: train; dot: test ± s.e.)")
    ax.legend(fontsize=7)
    ax = axes[1, j]
    data = [mse.get(f"{m}/p{p}", {"mean": []})["mean"] for m in MODELS]
    ax.boxplot(data, showfliers=False)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data):
      ax.scatter(i + 1 + rng.uniform(-0.15, 0.15, len(d)), d, s=8, color=colors[MODELS[i]])
    ax.set_xticks(range(1, len(MODELS) + 1), MODELS, rotation=30, fontsize=8)
    ax.set_ylabel("final test MSE (mean of y1, y2), one dot per seed")
  fig.tight_layout()
  fig.savefig(os.path.join(HERE, "mmoe.png"), dpi=110)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=10)
  parser.add_argument("--family_seeds", type=int, default=5, help="seeds of " + ", ".join(FAMILY))
  parser.add_argument("--steps", type=int, default=STEPS)
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args()
  counts, width = param_counts()
  path = sweep.results_path(HERE)
  setup = {"data": "mmoe_synthetic generator, data seed 0"}
  if not args.report_only:
    run = lambda cells, seeds, make: sweep.run_grid(  # noqa: E731
        HERE, make, cells, seeds, vmap_seeds=True, setup=setup, curves=("loss",))
    for m in MODELS:
      run(SELECT_CELLS[m], range(SELECT_SEEDS), lambda c, s: make_config(c, s, args.steps, width))
      lr = chosen_lr(sweep.read_results(path), m)[0]
      run([c for c in CELLS if c.startswith(m + "/")],
          range(args.family_seeds if m in FAMILY else args.seeds),
          lambda c, s, lr=lr: make_config(c, s, args.steps, width, lr))
  rows = sweep.read_results(path)
  configs = sweep.read_configs(path)
  for r in rows:  # the learning rate each row trained with, from its recorded config
    if "provenance" in r:
      r["lr"] = configs[r["provenance"]["setup_hash"]]["optimizer.learning_rate"]
  write_report(rows, args.steps, width, counts, label_correlation())


if __name__ == "__main__":
  main()
