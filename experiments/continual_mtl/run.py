"""Continual multi-task learning (ERNIE 2.0 style): three tasks arrive in stages.

  python experiments/continual_mtl/run.py [--seeds 3] [--stage_steps 300]

Tasks, each with its own embedded MNIST-1D dataset (own generator seed,
1,000 train / 500 validation signals): stage 1 ``digit`` (10-way), stage 2
``digit_shuf`` (10-way on spatially shuffled signals: same values, another
input distribution, so it pulls the shared trunk away from stage 1's
features), stage 3 ``parity``. Methods, same steps for all:

- ``sequential``: fine-tune on task 1, then only task 2, then only task 3.
- ``replay_<r>``: ERNIE 2.0's continual multi-task learning: a stage trains
  its new task with a share 1 − r of the batches and every earlier task with r.
- ``replay_<r>_emb``: the same plus a learned task embedding added to the
  input (``mixing.task_embedding``: a one-hot task id appended to the
  features, so the first layer adds a learned vector per task).
- ``joint``: all tasks from step 0 (uniform sampling), the multi-task reference.

Validation accuracy every 100 steps gives the curves. Forgetting of task i =
its validation accuracy at the end of its own stage minus at the end of
training (positive = forgotten). The replay share is picked on mean final
validation accuracy; the test split is only reported. Seeds run one by one
(per-seed curves, paired differences).
"""

import argparse
import json
import os
import sys

import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from mtl_jax import sweep  # noqa: E402

TASKS = ("digit", "digit_shuf", "parity")
DATASETS = [dict(name="mnist1d", alias="plain", tasks=["digit"], train_per_class=100,
                 dataset_args=dict(num_samples=3000, seed=21)),
            dict(name="mnist1d", alias="shuffled", tasks={"digit_shuf": "digit"},
                 train_per_class=100, shuffle_spatial=True,
                 dataset_args=dict(num_samples=3000, seed=22)),
            dict(name="mnist1d", alias="parity", tasks=["parity"], train_per_class=100,
                 dataset_args=dict(num_samples=3000, seed=23))]
REPLAYS = (0.1, 0.3)
CELLS = ["sequential"] + [f"replay_{r:g}" for r in REPLAYS] + ["replay_0.3_emb", "joint"]
STAGE_STEPS = 300
EVAL_EVERY = 100


def make_config(cell, seed):
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.datasets = [dict(d) for d in DATASETS]
  c.tasks = [dict(name="digit", kind="multiclass", num_outputs=10),
             dict(name="digit_shuf", kind="multiclass", num_outputs=10),
             dict(name="parity", kind="binary")]
  c.mixing = dict(sampling="uniform", batches="mixed", task_embedding=cell.endswith("_emb"))
  if cell != "joint":
    replay = 0.0 if cell == "sequential" else float(cell.split("_")[1])
    c.stages = [dict(steps=STAGE_STEPS, tasks=[TASKS[0]])] + [
        dict(steps=STAGE_STEPS, tasks=[t], replay=replay) for t in TASKS[1:]]
  c.model = dict(sharing="hard", trunk=dict(name="mlp", features=(128, 128)))
  c.optimizer = dict(name="adam", learning_rate=2e-3, schedule="constant")
  c.batch_size = 64
  c.eval_batch_size = 500
  c.num_train_steps = STAGE_STEPS * len(TASKS)
  c.log_every_steps = EVAL_EVERY
  c.eval_every_steps = EVAL_EVERY
  c.checkpoint_every_steps = 0
  return c


CURVES = os.path.join(HERE, "results_curves.json")  # committed: runs/ is not


def curves(cell, seed):
  """{task: {step: validation accuracy %}} from the run's metrics.jsonl.

  Kept in the committed results_curves.json, so --report_only works on a
  clean checkout (runs/ is git-ignored).
  """
  kept = json.load(open(CURVES)) if os.path.exists(CURVES) else {}
  key = f"{cell}/seed_{seed}"
  path = os.path.join(HERE, "runs", cell, f"seed_{seed}", "metrics.jsonl")
  if os.path.exists(path):
    out = {t: {} for t in TASKS}
    with open(path) as f:
      for line in f:
        r = json.loads(line)
        for t in TASKS:
          if f"validation/{t}/accuracy" in r:
            out[t][str(r["step"])] = 100 * r[f"validation/{t}/accuracy"]
    kept[key] = out
    with open(CURVES, "w") as f:
      json.dump(kept, f, indent=1, sort_keys=True)
  if key not in kept:
    raise FileNotFoundError(f"no curves for {key}: neither {path} nor an entry in {CURVES}")
  return {t: {int(step): v for step, v in c.items()} for t, c in kept[key].items()}


def forgetting(cell, seed):
  c = curves(cell, seed)
  end = STAGE_STEPS * len(TASKS)
  return {t: c[t][STAGE_STEPS * (i + 1)] - c[t][end] for i, t in enumerate(TASKS[:-1])}


def _fmt(values, signed=False):
  m, se, n = sweep.mean_se(values)
  return (f"{m:+.1f} ± {se:.1f}" if signed else f"{m:.1f} ± {se:.1f}") if n else ""


def write_report(rows):
  test = {c: {r["seed"]: {t: 100 * r["test"][t]["accuracy"] for t in TASKS}
              for r in rows if r["cell"] == c} for c in CELLS}
  val = {c: np.mean([100 * r["validation"][t]["accuracy"] for r in rows if r["cell"] == c
                     for t in TASKS]) for c in CELLS if test[c]}
  replays = [f"replay_{r:g}" for r in REPLAYS if f"replay_{r:g}" in val]
  chosen = max(replays, key=val.get) if replays else None
  seeds = sorted(test.get("sequential", {}))
  lines = ["# Continual multi-task learning (ERNIE 2.0 style, MNIST-1D)", "",
           "Generated by `python experiments/continual_mtl/run.py` from results.jsonl: "
           f"{len(TASKS)} stages of {STAGE_STEPS} steps (batch 64), tasks {list(TASKS)}; "
           f"mean ± s.e. over {len(seeds)} seeds. Replay share picked on mean final validation "
           f"accuracy: {chosen} ("
           + ", ".join(f"{c} {val[c]:.1f}" for c in replays) + ").", "",
           "Final test accuracy % (Δ vs sequential fine-tuning, paired per seed):", "",
           "| method | " + " | ".join(TASKS) + " | mean |", "|---|" + "---|" * (len(TASKS) + 1)]
  for c in CELLS:
    if not test[c]:
      continue
    cells = []
    for t in TASKS + ("mean",):
      get = (lambda s, c=c, t=t: np.mean(list(test[c][s].values())) if t == "mean"
             else test[c][s][t])
      vals = [get(s) for s in test[c]]
      diff = [get(s) - (np.mean(list(test["sequential"][s].values())) if t == "mean"
                        else test["sequential"][s][t]) for s in test[c] if s in test["sequential"]]
      cells.append(_fmt(vals) + ("" if c == "sequential" else f" (Δ {_fmt(diff, True)})"))
    lines.append(f"| {c}{' (chosen)' if c == chosen else ''} | " + " | ".join(cells) + " |")
  lines += ["", "Forgetting (validation accuracy % at the end of the task's own stage minus at "
            "the end of training; positive = forgotten):", "",
            "| method | " + " | ".join(TASKS[:-1]) + " |", "|---|" + "---|" * (len(TASKS) - 1)]
  for c in CELLS:
    if c == "joint" or not test[c]:
      continue
    f = [forgetting(c, s) for s in test[c]]
    lines.append(f"| {c} | " + " | ".join(_fmt([x[t] for x in f]) for t in TASKS[:-1]) + " |")
  lines += ["", "Curves: `curves.png` (validation accuracy per task vs step, seed mean; dotted "
            "lines = stage boundaries, dashed = joint). Each row of results.jsonl records the cell, seed, config "
            "(data, stages, steps, every hyperparameter) and the results.", ""]
  sweep.write_results_md(os.path.join(HERE, "results.md"), "\n".join(lines) + "\n")
  _plot(test)


def _plot(test):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(TASKS), figsize=(12, 3.4), sharey=True)
  for ax, t in zip(axes, TASKS):
    for c in CELLS:
      if not test[c]:
        continue
      cs = [curves(c, s)[t] for s in test[c]]
      steps = sorted(cs[0])
      ax.plot(steps, [np.mean([x[k] for x in cs]) for k in steps], label=c,
              ls="--" if c == "joint" else "-")
    for i in range(1, len(TASKS)):
      ax.axvline(STAGE_STEPS * i, color="gray", lw=0.6, ls=":")
    ax.set_title(t)
    ax.set_xlabel("step")
  axes[0].set_ylabel("validation accuracy %")
  axes[-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(HERE, "curves.png"), dpi=120)


def main():
  global STAGE_STEPS
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--stage_steps", type=int, default=STAGE_STEPS)
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args()
  STAGE_STEPS = args.stage_steps
  if not args.report_only:
    sweep.run_grid(HERE, make_config, CELLS, range(args.seeds))
  write_report(sweep.read_results(os.path.join(HERE, "results.jsonl")))


if __name__ == "__main__":
  main()
