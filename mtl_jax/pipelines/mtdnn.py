"""MT-DNN (Liu et al. 2019) on a GLUE folder: pretrained encoder -> multi-task -> per task.

Stage 1 is the pretrained encoder (a Hugging Face BERT directory, MiniLM by
default). Stage 2 trains it with one head per task on all listed tasks at
once, one task per batch (``config.mixing``: proportional by default, or
MT-DNN's ``main``/``ratio``), in ``workdir/stage2_mtl``. Stage 3 fine-tunes a
copy per task from the stage-2 encoder *and* that task's own stage-2 head
(``init_from.heads``), in ``workdir/stage3_<task>``. With
``pipeline.single_task=True``, ``workdir/single_<task>`` also fine-tunes the
encoder on each task alone (the BERT baseline), with stage 3's recipe.

Each stage is an ordinary run built from the pipeline config (everything but
``pipeline`` and ``glue_dir``, with ``pipeline.stage2`` / ``pipeline.stage3``
overrides merged in): a stage whose workdir holds results.json is finished
and skipped; an unfinished one resumes from its checkpoint. The per-task dev
scores of every stage are printed as a table and written to
``workdir/results.json``.

Task types (MT-DNN's four; metrics as GLUE reports them): single-sentence
classification (CoLA: MCC; SST-2: accuracy), pairwise classification (RTE,
MNLI, QNLI: accuracy; MRPC, QQP: F1 and accuracy), similarity regression
(STS-B: Pearson and Spearman) and pairwise ranking (QNLI with
``pipeline.qnli_as="ranking"``, the default as in MT-DNN: kind
``grouped_ranking``, rows grouped by question, GLUE's per-row accuracy;
``"classification"``: two-class pair classification; docs/pipelines.md).
"""

import copy
import json
import os
from typing import Any, Dict, List

import ml_collections

from mtl_jax import checkpoint, config_keys
from mtl_jax.data import glue
from mtl_jax.pipelines.base import PIPELINES

# key -> (kind, num_outputs, metrics in report order)
TASK_TYPES = {
    "cola": ("multiclass", 2, ("mcc", "accuracy")),
    "sst2": ("multiclass", 2, ("accuracy",)),
    "mrpc": ("multiclass", 2, ("f1", "accuracy")),
    "qqp": ("multiclass", 2, ("f1", "accuracy")),
    "stsb": ("similarity", 1, ("pearson", "spearman")),
    "mnli": ("multiclass", 3, ("accuracy",)),
    "qnli": ("multiclass", 2, ("accuracy",)),
    "rte": ("multiclass", 2, ("accuracy",)),
    "wnli": ("multiclass", 2, ("accuracy",)),
}
OPTIONS = ("name", "tasks", "encoder", "pooling", "max_length", "holdout", "max_examples",
           "finetune", "single_task", "stage2", "stage3", "qnli_as")
DEFAULTS = dict(encoder="", pooling="cls", max_length=128, holdout=0.0, max_examples=None,
                finetune=None, single_task=False, stage2={}, stage3={}, qnli_as="ranking")
QNLI_AS = ("ranking", "classification")


def _fail(msg: str):
  raise config_keys.ConfigError(msg)


def options(config) -> Dict[str, Any]:
  """``config.pipeline`` with defaults, checked; tasks as GLUE keys."""
  p = dict(config.pipeline)
  unknown = sorted(set(p) - set(OPTIONS))
  if unknown:
    _fail(f"config.pipeline: unknown keys {unknown}; valid: {list(OPTIONS)}")
  p = {**DEFAULTS, **p}
  if not p.get("tasks"):
    _fail(f"config.pipeline.tasks is empty: list GLUE tasks, from {sorted(TASK_TYPES)}")
  keys = _keys(p["tasks"], "tasks")
  if len(set(keys)) != len(keys):
    _fail(f"config.pipeline.tasks lists a task twice: {list(p['tasks'])}")
  p["tasks"] = keys
  finetune = keys if p["finetune"] is None else _keys(p["finetune"], "finetune")
  extra = [t for t in finetune if t not in keys]
  if extra:
    _fail(f"config.pipeline.finetune names {extra}, which are not in pipeline.tasks {keys}")
  p["finetune"] = finetune
  if p["qnli_as"] not in QNLI_AS:
    _fail(f"config.pipeline.qnli_as must be one of {list(QNLI_AS)}, got {p['qnli_as']!r}")
  if not config.get("glue_dir"):
    _fail("config.glue_dir is not set: point it at a GLUE folder (<dir>/<TASK>/train.tsv, as "
          "the GLUE download script writes it), e.g. --config.glue_dir=/data/glue_data")
  if not p["encoder"]:
    from mtl_jax.pretrained import minilm_dir
    p["encoder"] = minilm_dir()
  for key in ("stage2", "stage3"):
    p[key] = _plain(p[key]) or {}
  return p


def _keys(names, what: str) -> List[str]:
  out = []
  for t in names:
    try:
      out.append(glue.task_key(str(t)))
    except KeyError:
      _fail(f"config.pipeline.{what} names unknown GLUE task {t!r}; known tasks: "
            f"{sorted(TASK_TYPES)}")
  return out


def _plain(v):
  return v.to_dict() if hasattr(v, "to_dict") else (dict(v) if isinstance(v, dict) else v)


def check_glue_dir(glue_dir: str, tasks: List[str]) -> None:
  """Every listed task's train and dev file exists; else the missing paths are named."""
  missing = []
  for t in tasks:
    files = glue.TASKS[t].files
    for split in ("train", "dev"):
      path = os.path.join(glue_dir, glue.DIR_NAMES[t], files[split])
      if not os.path.isfile(path):
        missing.append(path)
  if missing:
    raise FileNotFoundError(f"GLUE folder {glue_dir} lacks files of the listed tasks: "
                            f"{missing} (expected <glue_dir>/<TASK>/train.tsv and dev.tsv, MNLI "
                            f"dev_matched.tsv, as the GLUE download script writes them)")


def _merge(base: dict, over: dict) -> dict:
  out = copy.deepcopy(base)
  for k, v in over.items():
    if isinstance(v, dict) and isinstance(out.get(k), dict):
      out[k] = _merge(out[k], v)
    else:
      out[k] = copy.deepcopy(v)
  return out


def _ranked(p, t: str) -> bool:
  return t == "qnli" and p["qnli_as"] == "ranking"


def task_entry(t: str, p=None) -> dict:
  kind, n, metrics = TASK_TYPES[t]
  if p is not None and _ranked(p, t):
    kind, n = "grouped_ranking", 1
  return dict(name=t, kind=kind, num_outputs=n, metrics=("loss",) + metrics)


def _data(config, p, t, workdir) -> dict:
  out = dict(name="glue", task=t, data_dir=os.path.join(config.glue_dir, glue.DIR_NAMES[t]),
             tokenizer=p["encoder"], max_length=int(p["max_length"]),
             holdout=float(p["holdout"]), seed=int(config_keys.get(config, "seed")),
             max_examples=p["max_examples"], cache_dir=os.path.join(workdir, "tokenized"))
  if _ranked(p, t):
    out["qnli_as"] = "ranking"
  return out


def _base(config, p) -> dict:
  from mtl_jax.pretrained import hf_bert
  base = {k: _plain(v) for k, v in config.items() if k not in ("pipeline", "glue_dir")}
  model = dict(base.get("model") or {})
  if not model.get("trunk"):
    model["trunk"] = hf_bert.trunk_config(p["encoder"], pooling=p["pooling"])
  base["model"] = model
  return base


def stage_configs(config, workdir: str) -> Dict[str, ml_collections.ConfigDict]:
  """{stage name: its config}, in run order: stage2_mtl, [single_<t>...], stage3_<t>..."""
  p = options(config)
  base = _base(config, p)
  out = {}
  s2 = _merge(base, p["stage2"])
  s2.pop("data", None)
  s2["datasets"] = [dict(_data(config, p, t, workdir), alias=t, tasks=[t]) for t in p["tasks"]]
  s2["tasks"] = [task_entry(t, p) for t in p["tasks"]]
  s2["init_from"] = dict(workdir=p["encoder"], load="trunk/.*")
  out["stage2_mtl"] = s2
  finetune = _merge(base, p["stage3"])
  finetune["mixing"] = None
  finetune.pop("datasets", None)
  if p["single_task"]:
    for t in p["finetune"]:
      out[f"single_{t}"] = dict(copy.deepcopy(finetune), data=_data(config, p, t, workdir),
                                tasks=[task_entry(t, p)],
                                init_from=dict(workdir=p["encoder"], load="trunk/.*"))
  for t in p["finetune"]:
    out[f"stage3_{t}"] = dict(copy.deepcopy(finetune), data=_data(config, p, t, workdir),
                              tasks=[task_entry(t, p)],
                              init_from=dict(workdir=os.path.join(workdir, "stage2_mtl"),
                                             load="trunk/.*", heads={t: t}))
  return {k: ml_collections.ConfigDict(v) for k, v in out.items()}


def run_stage(name: str, config, workdir: str) -> dict:
  """Trains ``config`` in ``workdir`` unless it finished there (results.json) already."""
  from mtl_jax import train
  done = os.path.join(workdir, "results.json")
  if os.path.isfile(done):
    checkpoint.check_workdir_config(workdir, config.to_json())  # the same stage, not another
    print(f"[mtdnn] {name}: finished earlier, skipped ({workdir})", flush=True)
    with open(done) as f:
      return json.load(f)
  resumed = os.path.isdir(os.path.join(workdir, "checkpoints"))
  print(f"[mtdnn] {name}: {'resuming' if resumed else 'training'} in {workdir}", flush=True)
  return train.train_and_evaluate(config, workdir)


def table(results: Dict[str, Dict[str, Dict[str, float]]], tasks: List[str]) -> str:
  """Markdown: one row per (task, GLUE metric), one column per stage."""
  stages = list(results)
  lines = ["| task | metric | " + " | ".join(stages) + " |",
           "|---|---|" + "---|" * len(stages)]
  for t in tasks:
    for m in TASK_TYPES[t][2]:
      cells = [f"{100 * results[s][t][m]:.2f}" if t in results[s] else "" for s in stages]
      lines.append(f"| {t} | {m} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


@PIPELINES.register("mtdnn")
def run(config, workdir: str) -> dict:
  """Runs every stage (see the module docstring); returns what results.json holds."""
  p = options(config)
  check_glue_dir(config.glue_dir, p["tasks"])
  split = "test" if float(p["holdout"]) else "validation"  # dev is the reported split
  os.makedirs(workdir, exist_ok=True)
  scores: Dict[str, Dict[str, Dict[str, float]]] = {}
  for name, cfg in stage_configs(config, workdir).items():
    res = run_stage(name, cfg, os.path.join(workdir, name))
    column = "stage2" if name == "stage2_mtl" else name.split("_")[0]
    for t, metrics in res[split].items():
      scores.setdefault(column, {})[t] = metrics
  order = [c for c in ("single", "stage2", "stage3") if c in scores]
  scores = {c: scores[c] for c in order}
  out = dict(pipeline="mtdnn", glue_dir=config.glue_dir, encoder=p["encoder"],
             reported_split="dev", tasks=p["tasks"], scores=scores)
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(out, f, indent=2)
  print(f"MT-DNN dev scores (x100) in {workdir}:\n{table(scores, p['tasks'])}", flush=True)
  return out
