"""GradNorm's regression toy (Chen et al., ICML 2018): does each weighting find
weights that balance tasks whose output scales differ by σ_i?

  python experiments/gradnorm_toy/run.py [--seeds 5] [--steps N (default: STEPS[T])]

Data: ``gradnorm_toy`` (one draw of B, ε, x; 9000/500/500), T=2 with
σ=(1, 100) and T=10 with σ=1..10. Model: mlp trunk of 4 ReLU layers of 100,
one linear head per task, MSE. Seeds (``num_seeds`` replicas) change the
init and batch order, not the data. Reported metric: the normalised test
loss Σ_i MSE_i / σ_i² (MSE over examples and the 100 outputs of task i), so
every task counts on the same scale. Method comparisons are seed-paired
differences (seed s is the same replica, init key and batch order, in every
cell of a T), ± the s.e. of those differences. No hyperparameter is chosen by
this study: GradNorm's α=0.12 is the paper's, the other settings are fixed in
advance (below), so the validation split is only reported, never used to pick.
"""

import argparse
import os
import sys

import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from mtl_jax import sweep  # noqa: E402

SIGMAS = {2: (1.0, 100.0), 10: tuple(float(s) for s in range(1, 11))}
WEIGHTINGS = {
    "ew": dict(name="equal"),
    "uncertainty": dict(name="uncertainty"),
    # Adam on the weights: with the library default (SGD, lr 0.025) the step
    # lr·||∇_W L_i|| is ~10 here (norms ~400), so the weights jump between the
    # clip and the other extreme, then stick at the clip; kept as gradnorm_sgd at T=2.
    "gradnorm": dict(name="gradnorm", options=dict(alpha=0.12, optimizer="adam", lr=0.01)),
    "gradnorm_sgd": dict(name="gradnorm", options=dict(alpha=0.12)),
    "pcgrad": dict(aggregator="pcgrad"),
    "mgda": dict(aggregator="mgda"),
    "upgrad": dict(aggregator="upgrad"),
}
LEARNED = ("gradnorm", "uncertainty")  # methods whose per-task weights are logged
CELLS = [f"T{t}/{m}" for t in SIGMAS for m in WEIGHTINGS if not (t == 10 and m == "gradnorm_sgd")]
# Steps per T: the T=10 Jacobian methods cost ~10x an EW step on this CPU.
STEPS = {2: 2000, 10: 600}


def make_config(cell: str, seed: int, steps: int = 0) -> ml_collections.ConfigDict:
  t, method = cell.split("/")
  num_tasks = int(t[1:])
  sigmas = SIGMAS[num_tasks]
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.data = dict(name="gradnorm_toy", sigmas=sigmas, seed=0)
  c.tasks = [dict(name=f"t{i}", kind="regression", num_outputs=100, metrics=("mse",))
             for i in range(len(sigmas))]
  c.model = dict(sharing="hard", trunk=dict(name="mlp", features=(100, 100, 100, 100)))
  c.optimizer = dict(name="adam", learning_rate=1e-2, schedule="cosine")
  c.weighting = dict(WEIGHTINGS[method])
  if num_tasks == 2 and "name" in c.weighting:  # per-task gradient norms, for the notes
    c.weighting.log_task_gradients = True
  c.batch_size = 100
  c.eval_batch_size = 500
  c.num_train_steps = steps or STEPS[num_tasks]
  c.log_every_steps = 50
  c.checkpoint_every_steps = 0
  return c


def normalised_loss(row: dict, sigmas) -> float:
  return float(sum(row["test"][f"t{i}"]["mse"] / s ** 2 for i, s in enumerate(sigmas)))


def _by_seed(rows, t: int, split: str):
  """{cell: {seed: Σ_i MSE_i/σ_i² on split}} for the cells of T=t."""
  sigmas, out = SIGMAS[t], {}
  for r in rows:
    if r["cell"].startswith(f"T{t}/"):
      out.setdefault(r["cell"], {})[r["seed"]] = float(
          sum(r[split][f"t{i}"]["mse"] / s ** 2 for i, s in enumerate(sigmas)))
  return out



PAIRS = [(m, "ew") for m in WEIGHTINGS if m != "ew"] + [("gradnorm", "uncertainty")]


def _trajectory(rows, cell: str, key: str):
  """(steps, values [n_logs, T]) of train/<task>/<key>, kept in the cell's committed rows.

  ``run_grid(curves=...)`` copies the logged curves into every row; the
  library logs the mean over the replicas, so this is the seed-mean trajectory.
  """
  t = len(SIGMAS[int(cell.split("/")[0][1:])])
  for r in rows:
    curves = r.get("train_curves_replica_mean", {})
    if r["cell"] == cell and key in curves:
      return (np.asarray(curves["step"]),
              np.stack([curves[key][f"t{i}"] for i in range(t)], axis=1))
  return None


def weight_trajectory(rows, cell: str):
  return _trajectory(rows, cell, "weight")


def gradient_imbalance(rows, cell: str):
  """(steps, max_i G_i / min_i G_i) with G_i = w_i · ||∇_trunk L_i|| (T=2 runs log the norms)."""
  w, n = _trajectory(rows, cell, "weight"), _trajectory(rows, cell, "grad_norm")
  if w is None or n is None or not len(n[0]):
    return None
  g = w[1] * n[1]
  return n[0], g.max(1) / np.maximum(g.min(1), 1e-12)


def _spearman(a, b) -> float:
  ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
  return float(np.corrcoef(ra, rb)[0, 1])


CURVE_CELLS = ["T2/ew", "T2/uncertainty", "T2/gradnorm", "T2/gradnorm_sgd", "T10/uncertainty",
               "T10/gradnorm"]  # what the weights table and weights.png need


def write_report(rows, curve_rows, curve_file):
  lines = ["# GradNorm toy (Chen et al. 2018)", "",
           "Generated by `python experiments/gradnorm_toy/run.py` from results.jsonl. Metric: "
           "normalised test loss Σ_i MSE_i/σ_i² (lower is better; MSE_i over the test examples and "
           "the 100 outputs of task i), mean ± s.e. over seeds, beside the terms of the "
           "smallest- and largest-σ task. For scale: predicting 0 gives MSE_i/σ_i² ≈ 0.58 "
           "per task.", ""]
  for t, sigmas in SIGMAS.items():
    lines += [f"## T={t}, σ={list(sigmas)}", "",
              "| method | Σ MSE_i/σ_i² | MSE/σ² of σ_min task | MSE/σ² of σ_max task | seeds |",
              "|---|---|---|---|---|"]
    for m in WEIGHTINGS:
      rs = [r for r in rows if r["cell"] == f"T{t}/{m}"]
      if not rs:
        continue
      tot = sweep.mean_se([normalised_loss(r, sigmas) for r in rs])
      lo = sweep.mean_se([r["test"]["t0"]["mse"] / sigmas[0] ** 2 for r in rs])
      hi = sweep.mean_se([r["test"][f"t{t - 1}"]["mse"] / sigmas[-1] ** 2 for r in rs])
      lines.append(f"| {m} | {tot[0]:.4f} ± {tot[1]:.4f} | {lo[0]:.4f} ± {lo[1]:.4f} | "
                   f"{hi[0]:.4f} ± {hi[1]:.4f} | {tot[2]} |")
    lines.append("")
  lines += ["## Seed-paired differences of Σ MSE_i/σ_i²", "",
            "Seed s of one method minus seed s of the other (same data, init key and batch "
            "order), mean ± s.e. of those paired differences; < 0: the first method is better. "
            "Validation is shown beside test as a check; nothing is selected on either.", "",
            "| difference | T=2 test | T=2 validation | T=10 test | T=10 validation |",
            "|---|---|---|---|---|"]
  split_seeds = {(t, sp): _by_seed(rows, t, sp) for t in SIGMAS for sp in ("test", "validation")}
  for a, b in PAIRS:
    cells = []
    for t in SIGMAS:
      for sp in ("test", "validation"):
        d = split_seeds[(t, sp)]
        m, se, n = sweep.paired_mean_se(d.get(f"T{t}/{a}", {}), d.get(f"T{t}/{b}", {}))
        cells.append(f"{m:+.4f} ± {se:.4f}" if n else "n/a")
    lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
  lines.append("")
  if curve_file == "results.jsonl":
    source = ("From the train curves kept in the rows of the tables above (`results.jsonl`; "
              "provenance below).")
  else:
    source = (f"From the train curves kept in the committed rows of `{curve_file}` (same "
              "configs as the cells above; `--curves_only` reruns just these cells). "
              + sweep.provenance_md(curve_rows).strip())
  lines += ["## Learned weights at the last logged step (mean over seeds)", "", source, "",
            "| cell | weights w_0..w_{T-1} | Spearman(w, 1/σ) |", "|---|---|---|"]
  for t, sigmas in SIGMAS.items():
    for m in LEARNED + ("gradnorm_sgd",):
      traj = weight_trajectory(curve_rows, f"T{t}/{m}")
      if traj is None or not len(traj[0]):
        continue
      w = traj[1][-1]
      rho = _spearman(w, 1.0 / np.asarray(sigmas))
      lines.append(f"| T{t}/{m} | {np.array2string(w, precision=3, max_line_width=200)} | "
                   f"{rho:+.2f} |")
  sweep.write_results_md(os.path.join(HERE, "results.md"), "\n".join(lines) + "\n\n", rows)
  _plot(rows, curve_rows)


def _plot(rows, curve_rows):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(2, 4, figsize=(16, 7))
  for row, (t, sigmas) in enumerate(SIGMAS.items()):
    ax = axes[row, 0]
    methods = [m for m in WEIGHTINGS if f"T{t}/{m}" in CELLS]
    stats = [sweep.mean_se([normalised_loss(r, sigmas) for r in rows if r["cell"] == f"T{t}/{m}"])
             for m in methods]
    ax.bar(range(len(methods)), [0 if s[2] == 0 else s[0] for s in stats],
           yerr=[0 if s[1] != s[1] else s[1] for s in stats], color="C0")
    ax.set_xticks(range(len(methods)), methods, rotation=30)
    ax.set_ylabel("test Σ MSE_i/σ_i² (mean ± s.e.)")
    ax.set_title(f"T={t}: normalised test loss")
    ax = axes[row, 3]
    if t == 2:
      for j, m in enumerate(("ew", "uncertainty", "gradnorm", "gradnorm_sgd")):
        imb = gradient_imbalance(curve_rows, f"T{t}/{m}")
        if imb is not None:
          ax.plot(imb[0], imb[1], label=m, color=f"C{j}")
      ax.set_xlabel("step")
      ax.set_title("T=2: max/min over tasks of w_i·‖∇_trunk L_i‖")
    else:  # final weights against σ, each normalised to sum T, beside ∝ 1/σ
      sig = np.asarray(sigmas)
      for j, m in enumerate(LEARNED):
        traj = weight_trajectory(curve_rows, f"T{t}/{m}")
        if traj is not None and len(traj[0]):
          w = traj[1][-1]
          ax.plot(sig, t * w / w.sum(), "o-", label=m, color=f"C{j + 1}")
      ax.plot(sig, t * (1 / sig) / (1 / sig).sum(), "k--", label="∝ 1/σ")
      ax.plot(sig, t * (1 / sig ** 2) / (1 / sig ** 2).sum(), "k:", label="∝ 1/σ²")
      ax.set_xscale("log")
      ax.set_xlabel("σ_i")
      ax.set_title(f"T={t}: final weights (sum T) vs σ")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    for col, m in enumerate(LEARNED, start=1):
      ax = axes[row, col]
      traj = weight_trajectory(curve_rows, f"T{t}/{m}")
      if traj is not None:
        colors = plt.cm.viridis(np.linspace(0, 1, t))
        for i in range(t):
          ax.plot(traj[0], traj[1][:, i], color=colors[i], label=f"σ={sigmas[i]:g}")
      sgd = weight_trajectory(curve_rows, f"T{t}/gradnorm_sgd") if m == "gradnorm" else None
      if sgd is not None:
        for i in range(t):
          ax.plot(sgd[0], sgd[1][:, i], color=colors[i], ls=":", lw=1,
                  label=f"σ={sigmas[i]:g}, SGD on w (library default)")
      ax.set_yscale("log")
      ax.set_xlabel("step")
      ax.set_ylabel("weight w_i")
      ax.set_title(f"T={t} {m} weights (mean over seeds)")
      ax.legend(fontsize=6, ncol=2)
  fig.tight_layout()
  fig.savefig(os.path.join(HERE, "weights.png"), dpi=110)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=5)
  parser.add_argument("--steps", type=int, default=0, help="0: STEPS[T]")
  parser.add_argument("--cells", default=None, help="comma-separated subset of CELLS")
  parser.add_argument("--curves_only", action="store_true",
                      help="run only CURVE_CELLS, into results_curves.jsonl")
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args()
  cells = args.cells.split(",") if args.cells else CELLS
  path, curve_path = sweep.results_path(HERE), sweep.results_path(HERE, "curves")
  setup = {"data": "gradnorm_toy generator, data seed 0"}
  make = lambda cell, seed: make_config(cell, seed, args.steps)  # noqa: E731
  if args.curves_only:
    sweep.run_grid(HERE, make, CURVE_CELLS, range(args.seeds), vmap_seeds=True, setup=setup,
                   path=curve_path, curves=("weight", "grad_norm"))
  elif not args.report_only:
    sweep.run_grid(HERE, make, cells, range(args.seeds), vmap_seeds=True, setup=setup,
                   curves=("weight", "grad_norm"))
  rows = sweep.read_results(path)
  curve_rows = [r for r in rows if "train_curves_replica_mean" in r]
  curve_file = "results.jsonl"
  if not curve_rows:
    curve_rows, curve_file = sweep.read_results(curve_path), os.path.basename(curve_path)
  write_report(rows, curve_rows, curve_file)


if __name__ == "__main__":
  main()
