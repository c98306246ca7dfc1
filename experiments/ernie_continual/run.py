"""ERNIE 2.0 on a laptop: does continual multi-task pretraining help downstream, and forget less?

  python experiments/ernie_continual/run.py [--seeds 2] [--steps 120] [--report_only]

Pretraining: a small BERT from scratch (2 blocks, hidden 64, MiniLM's
WordPiece vocabulary) on the embedded corpus (the standard library's pydoc
topics, mtl_jax/data/text_corpus.py), six self-supervised tasks
(mtl_jax/data/ernie_tasks.py): word masking, phrase masking, capitalization,
token-document relation, sentence reordering (3 segments, 6 classes),
sentence distance (3 classes). Documents are split 70/10/20: pretraining
trains on the first part and measures every task on the second
(validation); the last part is never seen in pretraining and makes the
downstream data. Schedules, all at the same total iterations (``--steps``),
batch 16, one task per batch:

- ``mlm``: word masking only (BERT's objective).
- ``joint``: all six tasks from step 0, uniform over tasks (multi-task).
- ``sequential``: six stages of steps/6, one task each (continual learning
  without replay).
- ``ernie``: ERNIE 2.0's continual multi-task schedule: the same six stages,
  each stage's iterations split equally among every task added so far
  (``mixing.ernie_stages``).

Each with and without a task embedding (``+emb``: ``model.task_embedding``,
one learned vector per task at the input layer). Seeds run as replicas of
one program (``num_seeds``); seed s of every cell shares the initial weights
and data order, so differences are paired.

Forgetting of task i = its validation accuracy at the end of the stage that
introduced it minus at the end of pretraining (positive = forgotten; stages
end every steps/6 for every schedule, so ``joint`` is measured at the same
times). Downstream: two GLUE-format tasks written from the held-out
documents, read by the ``glue`` reader: ``cola`` (CoLA layout: is the
sentence in its original word order or shuffled) and ``mrpc`` (MRPC layout:
is sentence 2 the sentence after sentence 1, or one from another document).
Each pretrained encoder (task table dropped) is fine-tuned with a [CLS]
head; 20% of train is the validation split that picks the learning rate per
cell, dev is reported. ``scratch`` is the same fine-tuning from random
weights.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import ml_collections
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from mtl_jax import evaluation, paths, sweep  # noqa: E402
from mtl_jax.data import ernie_tasks, mixing  # noqa: E402
from mtl_jax.data import text_corpus as tc  # noqa: E402

SETUP = {"data": "embedded pydoc topics corpus (Python standard library); GLUE-format "
                 "downstream tasks written from its held-out documents"}
# (config task, dataset, dataset task, kind, classes or None = vocabulary, extra options)
TASKS = (("word_mask", "ernie_masking", "masking", "masked_lm", None, dict(mode="word")),
         ("phrase_mask", "ernie_masking", "masking", "masked_lm", None,
          dict(mode="phrase", max_span=3)),
         ("caps", "ernie_capitalization", "capitalization", "token_classification", 2, {}),
         ("tdr", "ernie_token_document", "token_document", "token_classification", 2, {}),
         ("reorder", "ernie_reorder", "reorder", "token_classification", 6, {}),
         ("distance", "ernie_distance", "distance", "token_classification", 3, {}))
NAMES = tuple(t[0] for t in TASKS)
SCHEDULES = ("mlm", "joint", "sequential", "ernie")
CELLS = tuple(f"{s}{e}" for s in SCHEDULES for e in ("", "+emb"))
DOWNSTREAM = (("cola", 2), ("mrpc", 2))
SPLIT = (0.7, 0.1, 0.2)
# Everything a run depends on (the CI test shrinks these).
P = dict(steps=120, batch=16, max_length=48, max_predictions=8, hidden=64, layers=2, heads=2,
         intermediate=128, lr=1e-3, ft_steps=80, ft_batch=16, ft_lrs=(3e-4, 1e-3),
         max_documents=None, tokenizer=None, eval_batch=128, downstream=("cola", "mrpc"),
         eval_rows=96)


def set_tasks(names):
  """The pretraining tasks, in stage order (a subset of TASKS)."""
  global NAMES
  unknown = [n for n in names if n not in [t[0] for t in TASKS]]
  if unknown:
    raise ValueError(f"unknown tasks {unknown}; valid: {[t[0] for t in TASKS]}")
  NAMES = tuple(names)


def _corpus_args():
  return dict(max_documents=P["max_documents"], tokenizer=P["tokenizer"])


def _vocab():
  corpus, _ = ernie_tasks.corpus_and_splits(**_corpus_args(), split=SPLIT)
  return corpus.vocab_size


def _trunk(pooling):
  return dict(name="bert", vocab_size=_vocab(), hidden_size=P["hidden"],
              num_layers=P["layers"], num_heads=P["heads"],
              intermediate_size=P["intermediate"], max_position=P["max_length"], dropout=0.0,
              pooling=pooling)


def _ordered(names):
  by = {t[0]: t for t in TASKS}
  return [by[n] for n in names]


def stage_steps():
  return mixing._split_counts(P["steps"], np.ones(len(NAMES)))


def pretrain_config(cell, seed, num_seeds=1):
  schedule, emb = cell.replace("+emb", ""), cell.endswith("+emb")
  names = (NAMES[0],) if schedule == "mlm" else NAMES
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.num_seeds = num_seeds
  c.datasets = [dict(name=d, alias=a, tasks={a: t}, max_length=P["max_length"],
                     max_predictions=P["max_predictions"], split=SPLIT, **_corpus_args(), **opts)
                for a, d, t, _, _, opts in _ordered(names)]
  c.tasks = [dict(name=a, kind=k, num_outputs=n or _vocab()) for a, _, _, k, n, _ in
             _ordered(names)]
  c.mixing = dict(sampling="uniform")
  lengths = stage_steps()
  if schedule == "sequential":
    c.stages = [dict(steps=int(n), tasks=[t]) for n, t in zip(lengths, NAMES)]
  elif schedule == "ernie":
    c.stages = [dict(steps=int(n), tasks=[t], allocation="equal") for n, t in zip(lengths, NAMES)]
  c.model = dict(sharing="hard", trunk=_trunk("none"))
  if emb:
    c.model.task_embedding = len(names)
  c.optimizer = dict(name="adam", learning_rate=P["lr"], schedule="constant")
  c.batch_size = P["batch"]
  c.eval_batch_size = P["eval_batch"]
  c.num_train_steps = P["steps"]
  c.log_every_steps = P["steps"]
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  return c


def _loop(run, state, steps, on_step=None):
  feed = run.feed
  for k in range(steps):
    state, _ = run.train_step(state, feed.next(run.mesh))
    if on_step:
      on_step(k + 1, state)
  return state


def _subsample(sources, rows):
  """The sources with validation/test cut to a fixed seeded ``rows`` examples each: every
  stage-end evaluation streams vocabulary-sized MLM outputs through the host, which was
  most of the study's time with whole splits."""
  out = []
  for src in sources:
    splits = dict(src.splits)
    for sp in ("validation", "test"):
      if sp in splits and len(splits[sp]) > rows:
        idx = np.sort(np.random.default_rng(7).permutation(len(splits[sp]))[:rows])
        splits[sp] = splits[sp].subset(idx)
    out.append(dataclasses.replace(src, splits=splits))
  return out


def pretrain(cell, seeds):
  """Trains ``cell`` for every seed at once; returns (rows, params) with per-seed curves."""
  from mtl_jax.run import setup
  config = pretrain_config(cell, seeds[0], len(seeds))
  workdir = os.path.join(HERE, "runs", "pretrain", cell)
  if os.path.isdir(workdir):
    import shutil
    shutil.rmtree(workdir)
  run = setup(config, workdir)
  p = run.program
  bounds = set(np.cumsum(stage_steps()).tolist())
  sources = _subsample(run.sources, P["eval_rows"])
  curves = [{s.name: {} for s in p.specs} for _ in seeds]

  def evaluate(k, state):
    if k in bounds:
      _, reps = evaluation.evaluate_sources(run.eval_fn, state.params, sources,
                                            "validation", p.specs, p.groups,
                                            config.eval_batch_size, run.mesh, p.replicas)
      for r, rep in enumerate(reps):
        for t, m in rep.items():
          curves[r][t][k] = 100 * m["accuracy"]

  t0 = time.time()
  state = _loop(run, p.state, P["steps"], evaluate)
  seconds = round(time.time() - t0, 1)
  _, test = evaluation.evaluate_sources(run.eval_fn, state.params, sources, "test", p.specs,
                                        p.groups, config.eval_batch_size, run.mesh, p.replicas)
  run.feed.close()
  rows = []
  for r, seed in enumerate(seeds):
    prov, _ = sweep.provenance(pretrain_config(cell, seed), seed, SETUP)
    rows.append({"cell": cell, "seed": seed, "phase": "pretrain", "seconds": seconds,
                 "curves": curves[r], "test": test[r], "provenance": prov})
  return rows, jax.device_get(state.params)


def forgetting(row):
  """{task: accuracy at the end of the stage that introduced it - at the end}."""
  ends = np.cumsum(stage_steps()).tolist()
  out = {}
  for i, t in enumerate(NAMES[:-1]):
    c = row["curves"].get(t)
    if c:
      c = {int(k): v for k, v in c.items()}
      out[t] = c[ends[i]] - c[ends[-1]]
  return out


# ---------------------------------------------------------------------------- downstream

def write_downstream_glue(root):
  """CoLA- and MRPC-layout TSVs from the documents pretraining never saw."""
  corpus, parts = ernie_tasks.corpus_and_splits(**_corpus_args(), split=SPLIT)
  texts = dict(tc.read_documents(None))
  if P["max_documents"] is not None:
    texts = dict(list(tc.read_documents(None))[:P["max_documents"]])
  docs = [tc.split_sentences(texts[corpus.names[d]]) for d in parts["test"]]
  rng = np.random.default_rng(1234)
  cola, mrpc = [], []
  for d, sents in enumerate(docs):
    for j, s in enumerate(sents):
      words = s.split()
      if 5 <= len(words) <= 30:
        label = int(rng.integers(2))
        if not label:
          while True:
            shuffled = list(rng.permutation(words))
            if shuffled != words:
              break
          s = " ".join(shuffled)
        cola.append((label, s.replace("\t", " ")))
      if j + 1 < len(sents) and len(docs) > 1:
        label = int(rng.integers(2))
        if label:
          b = sents[j + 1]
        else:
          o = int(rng.integers(len(docs) - 1))
          o += o >= d
          b = docs[o][int(rng.integers(len(docs[o])))]
        mrpc.append((label, s.replace("\t", " "), b.replace("\t", " ")))
  for task, rows in (("CoLA", cola), ("MRPC", mrpc)):
    order = rng.permutation(len(rows))
    cut = int(0.7 * len(rows))
    os.makedirs(os.path.join(root, task), exist_ok=True)
    for split, idx in (("train", order[:cut]), ("dev", order[cut:])):
      with open(os.path.join(root, task, f"{split}.tsv"), "w", encoding="utf-8") as f:
        if task == "MRPC":
          f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
          for i in idx:
            f.write(f"{rows[i][0]}\t{i}\t{i + 100000}\t{rows[i][1]}\t{rows[i][2]}\n")
        else:
          for i in idx:
            f.write(f"gen\t{rows[i][0]}\t{'' if rows[i][0] else '*'}\t{rows[i][1]}\n")
  return {"cola": len(cola), "mrpc": len(mrpc)}


def finetune_config(task, lr, seed, num_seeds, glue_dir):
  from mtl_jax.pretrained import minilm_dir
  c = ml_collections.ConfigDict()
  c.seed = seed
  c.num_seeds = num_seeds
  c.data = dict(name="glue", task=task, data_dir=glue_dir, tokenizer=P["tokenizer"] or minilm_dir(),
                max_length=P["max_length"], holdout=0.2,
                cache_dir=os.path.join(HERE, "runs", "glue_cache"))
  c.tasks = [dict(name=task, kind="multiclass", num_outputs=2)]
  c.model = dict(sharing="hard", trunk=_trunk("cls"))
  c.optimizer = dict(name="adam", learning_rate=lr, schedule="constant")
  c.batch_size = P["ft_batch"]
  c.eval_batch_size = P["eval_batch"]
  c.num_train_steps = P["ft_steps"]
  c.log_every_steps = P["ft_steps"]
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  return c


def finetune_all(encoders, seeds, glue_dir):
  """Fine-tunes every encoder ({cell: stacked params or None}) on each downstream task and
  learning rate; one compiled program per (task, lr), reused across encoders."""
  from mtl_jax.run import setup
  rows = []
  for task, _ in DOWNSTREAM:
    if task not in P["downstream"]:
      continue
    for lr in P["ft_lrs"]:
      config = finetune_config(task, lr, seeds[0], len(seeds), glue_dir)
      run = setup(config, os.path.join(HERE, "runs", "finetune", f"{task}_{lr:g}"))
      p = run.program
      fresh = paths.flatten(jax.device_get(p.state.params))
      rng = np.asarray(jax.device_get(p.state.rng))  # train_step donates the state's buffers
      for cell, params in encoders.items():
        flat = dict(fresh)
        if params is not None:
          up = paths.flatten(params)
          for k in fresh:
            if k.startswith("trunk/"):
              flat[k] = up[k]  # [replicas, ...]: seed s gets seed s's encoder
        init = paths.unflatten({k: np.asarray(v) for k, v in flat.items()})
        state = p.replicas.vmap(p.fresh_state)(jax.device_put(init), jax.device_put(rng))
        run.feed = run.feed.restarted()
        t0 = time.time()
        state = _loop(run, state, P["ft_steps"])
        res = {}
        for split in ("validation", "test"):
          _, res[split] = evaluation.evaluate_sources(
              run.eval_fn, state.params, run.sources, split, p.specs, p.groups,
              config.eval_batch_size, run.mesh, p.replicas)
        for r, seed in enumerate(seeds):
          prov, _ = sweep.provenance(finetune_config(task, lr, seed, 1, glue_dir), seed, SETUP)
          rows.append({"cell": f"{cell}/{task}/lr_{lr:g}", "seed": seed, "phase": "finetune",
                       "encoder": cell, "task": task, "lr": lr,
                       "seconds": round(time.time() - t0, 1),
                       "validation": res["validation"][r], "test": res["test"][r],
                       "provenance": prov})
  return rows


# ---------------------------------------------------------------------------- report

def _fmt(values, signed=False):
  m, se, n = sweep.mean_se(values)
  return "" if not n else (f"{m:+.1f} ± {se:.1f}" if signed else f"{m:.1f} ± {se:.1f}")


def write_report(rows, info):
  pre = [r for r in rows if r["phase"] == "pretrain"]
  ft = [r for r in rows if r["phase"] == "finetune"]
  seeds = sorted({r["seed"] for r in pre})
  cells = [c for c in CELLS if any(r["cell"] == c for r in pre)]
  by = {(r["cell"], r["seed"]): r for r in pre}
  lines = ["# ERNIE 2.0 continual multi-task pretraining, small scale", "",
           f"Generated by `python experiments/ernie_continual/run.py --seeds {len(seeds)} "
           f"--steps {P['steps']}` (results.jsonl). Setup in run.py's docstring: a 2-block "
           f"BERT (hidden {P['hidden']}) from scratch, {P['steps']} pretraining iterations "
           f"of batch {P['batch']}, max length {P['max_length']}; {len(NAMES)} stages of "
           f"{[int(n) for n in stage_steps()]} iterations; mean ± s.e. over {len(seeds)} seeds (paired: "
           f"seed s shares init and data order in every cell). Downstream data: "
           f"{info.get('downstream_sizes')} examples (70% train, 30% dev) written from the "
           f"held-out 20% of the documents.", "",
           "## Pretraining tasks at the end (test accuracy %, held-out documents)", "",
           "| cell | " + " | ".join(NAMES) + " |", "|---|" + "---|" * len(NAMES)]
  for c in cells:
    vals = [_fmt([100 * by[(c, s)]["test"][t]["accuracy"] for s in seeds
                  if t in by[(c, s)]["test"]]) for t in NAMES]
    lines.append(f"| {c} | " + " | ".join(vals) + " |")
  lines += ["", "## Forgetting (validation accuracy % at the end of the task's own stage minus "
            "at the end; positive = forgotten)", "",
            "| cell | " + " | ".join(NAMES[:-1]) + " | mean |", "|---|" + "---|" * len(NAMES)]
  for c in cells:
    if c.startswith("mlm"):
      continue
    f = [forgetting(by[(c, s)]) for s in seeds]
    lines.append(f"| {c} | " + " | ".join(_fmt([x[t] for x in f]) for t in NAMES[:-1])
                 + f" | {_fmt([np.mean(list(x.values())) for x in f])} |")
  if ft:
    enc = [c for c in ("scratch",) + tuple(cells) if any(r["encoder"] == c for r in ft)]
    down = [(t, n) for t, n in DOWNSTREAM if any(r["task"] == t for r in ft)]
    lines += ["", "## Downstream (dev accuracy %, learning rate picked per cell on the "
              "validation split; Δ vs `mlm`, paired per seed)", "",
              "| encoder | " + " | ".join(f"{t} (lr)" for t, _ in down)
              + " | mean | Δ mean vs mlm |", "|---|" + "---|" * (len(down) + 2)]
    picked = {}
    for e in enc:
      for t, _ in down:
        cand = [lr for lr in P["ft_lrs"] if any(r["encoder"] == e and r["task"] == t
                                                and r["lr"] == lr for r in ft)]
        val = {lr: np.mean([r["validation"][t]["accuracy"] for r in ft if r["encoder"] == e
                            and r["task"] == t and r["lr"] == lr]) for lr in cand}
        lr = max(cand, key=val.get)
        picked[(e, t)] = (lr, {r["seed"]: 100 * r["test"][t]["accuracy"] for r in ft
                               if r["encoder"] == e and r["task"] == t and r["lr"] == lr})
    for e in enc:
      cols = [f"{_fmt(list(picked[(e, t)][1].values()))} ({picked[(e, t)][0]:g})"
              for t, _ in down]
      mean = {s: np.mean([picked[(e, t)][1][s] for t, _ in down]) for s in seeds}
      base = {s: np.mean([picked[("mlm", t)][1][s] for t, _ in down]) for s in seeds} \
          if ("mlm", down[0][0]) in picked else None
      delta = "" if base is None or e == "mlm" else _fmt([mean[s] - base[s] for s in seeds], True)
      lines.append(f"| {e} | " + " | ".join(cols) + f" | {_fmt(list(mean.values()))} | {delta} |")
  lines += ["", "Curves: `curves.png` (validation accuracy per pretraining task at each stage "
            "end, seed mean). Pretraining wall time per cell (all seeds): "
            + ", ".join(f"{c} {by[(c, seeds[0])]['seconds']:.0f}s" for c in cells) + ".", ""]
  prov = sweep.provenance_md(rows) if all("provenance" in r for r in rows) else ""
  sweep.write_results_md(os.path.join(HERE, "results.md"), "\n".join(lines) + "\n\n" + prov,
                         None)
  _plot(by, cells, seeds)


def _plot(by, cells, seeds):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(NAMES), figsize=(15, 3.2))
  ends = np.cumsum(stage_steps())
  for ax, t in zip(axes, NAMES):
    for c in cells:
      cs = [by[(c, s)]["curves"].get(t) for s in seeds]
      if not cs[0]:
        continue
      steps = sorted(int(k) for k in cs[0])
      ax.plot(steps, [np.mean([x[str(k)] if str(k) in x else x[k] for x in cs]) for k in steps],
              label=c, ls="--" if c.endswith("+emb") else "-", marker=".")
    for e in ends[:-1]:
      ax.axvline(e, color="gray", lw=0.5, ls=":")
    ax.set_title(t)
    ax.set_xlabel("iteration")
  axes[0].set_ylabel("validation accuracy %")
  axes[-1].legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(os.path.join(HERE, "curves.png"), dpi=110)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser()
  parser.add_argument("--seeds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=P["steps"])
  parser.add_argument("--ft_steps", type=int, default=P["ft_steps"])
  parser.add_argument("--cells", default=",".join(CELLS))
  parser.add_argument("--tasks", default=",".join(NAMES),
                      help="pretraining tasks in stage order (the first is mlm's only task)")
  parser.add_argument("--report_only", action="store_true")
  args = parser.parse_args(argv)
  P["steps"], P["ft_steps"] = args.steps, args.ft_steps
  set_tasks(args.tasks.split(","))
  path = os.path.join(HERE, "results.jsonl")
  info_path = os.path.join(HERE, "results_info.json")
  if not args.report_only:
    seeds = list(range(args.seeds))
    rows, encoders = [], {"scratch": None}
    for cell in args.cells.split(","):
      t0 = time.time()
      r, params = pretrain(cell, seeds)
      rows += r
      encoders[cell] = params
      print(f"pretrain {cell}: {time.time() - t0:.0f}s", flush=True)
    glue_dir = os.path.join(HERE, "runs", "glue")
    info = {"downstream_sizes": write_downstream_glue(glue_dir), "P": dict(P),
            "tasks": list(NAMES)}
    t0 = time.time()
    rows += finetune_all(encoders, seeds, glue_dir)
    print(f"finetune: {time.time() - t0:.0f}s", flush=True)
    with open(path, "w") as f:
      for r in rows:
        f.write(json.dumps(r, default=float) + "\n")
    with open(info_path, "w") as f:
      json.dump(info, f, indent=1, default=str)
  rows = [json.loads(line) for line in open(path)]
  info = json.load(open(info_path))
  P.update({k: v for k, v in info["P"].items() if k in P})
  set_tasks(info["tasks"])
  write_report(rows, info)


if __name__ == "__main__":
  main()
