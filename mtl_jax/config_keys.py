"""Every config key the docs name: its type, its default (or unset) and what it means.

One table (``SCHEMA``) read by the command line (``mtl_jax/config_cli.py``:
``--config.KEY=VALUE`` on any config, type-checked), by ``get`` (defaults) and
by ``config_validation.check_config_keys`` (unknown top-level keys), so docs
and CLI cannot drift; tests/test_config_cli.py checks that every
``config.<key>`` in README.md and docs/ is in it.

Only top-level defaults are ever filled in. A nested key stays absent unless
set, because scheme- and method-specific options are checked where they are
used (``build_model``: "unknown model options"). An ``Options`` entry is a
dict whose keys are the options of a registered component (its constructor's
parameters: the trunk named by ``model.trunk.name``, ...); its explicit
children here only document the common ones.

Imports nothing from mtl_jax: this is the bottom of
config_keys <- optim <- config_validation.
"""

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union


class ConfigError(ValueError):
  """A config key or value is invalid; the message names the key and the valid range."""


class _Marker:
  def __init__(self, name):
    self.name = name

  def __repr__(self):
    return self.name


UNSET = _Marker("unset")        # no default: absent unless set (a component's default applies)
MANDATORY = _Marker("required")  # must be set (at the top level: by the config file)


@dataclasses.dataclass(frozen=True)
class Key:
  path: str
  type: Any              # a typing annotation: int, Optional[int], Sequence[int], dict, Any, ...
  default: Any           # the value, UNSET or MANDATORY
  doc: str


@dataclasses.dataclass(frozen=True)
class Options:
  """A dict of a registered component's options. ``selectors``: (path of the key naming the
  component, registry kind, default name); the first one set (or defaulted) wins. ``fixed``:
  keys valid for every component (the selector itself, keys the caller pops)."""
  path: str
  selectors: Tuple[Tuple[str, str, Optional[str]], ...]
  fixed: Tuple[str, ...]
  default: Any
  doc: str
  type: Any = Optional[dict]


_I, _F, _B, _S = int, float, bool, str
_SEQ_DICT = Sequence[dict]

SCHEMA: Tuple[Any, ...] = (
    # ---- data and tasks
    Options("data", (("data.name", "dataset", None),), ("name",), MANDATORY,
            "dict(name=registered dataset, **its builder's options); not with datasets "
            "(docs/datasets.md)", dict),
    Key("data.name", _S, MANDATORY, "a registered dataset (mtl_jax/data/)"),
    Key("tasks", _SEQ_DICT, MANDATORY,
        "[dict(name=, kind=, num_outputs=1, weight=1.0, metrics=())] (docs/tasks.md)"),
    Key("datasets", Optional[_SEQ_DICT], None,
        "instead of data: [dict(name=, tasks=[...], alias=, weight=, **options)]"),
    Key("mixing", Optional[dict], None, "how batches draw from config.datasets"),
    Key("mixing.sampling", _S, "proportional", "proportional | temperature | uniform | weights"),
    Key("mixing.temperature", _F, 2.0, "p ∝ n^(1/temperature) with sampling='temperature'"),
    Key("mixing.batches", _S, "per_dataset", "per_dataset (one dataset per batch) | mixed"),
    Key("mixing.task_embedding", _B, False, "append a one-hot dataset id to array inputs"),
    Key("mixing.main", Optional[_S], None,
        "MT-DNN main dataset alias: with ratio, the others are auxiliary"),
    Key("mixing.ratio", Optional[_F], None,
        "auxiliary batches per main batch (MT-DNN extra_task_ratio; capped by their size)"),
    Key("stages", Optional[_SEQ_DICT], None,
        "tasks over time: [dict(steps=, tasks=[...] | datasets=[...], replay=0.0 | "
        "allocation='equal' | {task: iterations})]"),
    Key("prefetch_batches", _I, 0, ">0: the train feed prepares that many batches ahead"),
    # ---- model
    Options("model", (("model.sharing", "sharing scheme", "hard"),),
            ("sharing", "dtype", "param_dtype", "task_embedding"), MANDATORY,
            "dict(sharing=scheme, trunk=dict(...), **the scheme's options) (docs/sharing.md)",
            dict),
    Key("model.sharing", _S, "hard",
        "hard | single_task | soft | mmoe | omoe | cross_stitch | pooled"),
    Options("model.trunk", (("model.trunk.name", "trunk", None),), ("name",), MANDATORY,
            "dict(name=registered trunk, **its options: the trunk class's fields)", dict),
    Key("model.trunk.name", _S, MANDATORY, "mlp | cnn | lenet | bert | resnet | vit | ..."),
    Key("model.dtype", _S, "float32", "compute dtype (bfloat16: float32 params, losses, weights)"),
    Key("model.param_dtype", _S, "float32", "stored parameter dtype"),
    Key("model.route_heads", _B, False,
        "(hard, pooled) each example through its own task's head in training"),
    # ernie: ERNIE 2.0 task embedding
    Key("model.task_embedding", _I, 0, "number of task ids: a learned vector per id added to "
        "the trunk's input embeddings (bert), fed by each dataset's task_id (0: off)"),
    Key("model.head_hidden", Sequence[int], (), "hidden widths of each task's head (towers)"),
    Key("model.num_experts", _I, 8, "(mmoe, omoe) number of experts"),
    Key("model.stitch_diagonal", _F, 0.9, "(cross_stitch) initial self-weight of each unit"),
    # dense prediction (docs/dense.md)
    Options("model.decoder", (("model.decoder.name", "dense decoder", None),), ("name",), None,
            "(hard, single_task, soft, mtan) per-task dense decoders: dict(name='conv' | "
            "'aspp', **options); None: per-pixel linear heads"),
    Key("model.decoder.name", _S, MANDATORY, "conv (MTAN's prediction layer) | aspp (DeepLabV3)"),
    Key("model.decoder.features", _I, UNSET, "decoder width (aspp: 256; conv: -1, the input's)"),
    Key("model.decoder.rates", Sequence[int], UNSET, "(aspp) dilation rates, (12, 24, 36)"),
    # ---- optimization
    Key("optimizer", dict, MANDATORY, "dict(name=, learning_rate=, ...) (mtl_jax/optim.py)"),
    Key("optimizer.name", _S, "adam", "adam | adamw | sgd"),
    Key("optimizer.learning_rate", _F, MANDATORY, "peak learning rate (> 0)"),
    Key("optimizer.schedule", _S, "constant", "constant | cosine | linear (decay to 0)"),
    Key("optimizer.warmup_steps", _I, 0, "linear warm-up steps"),
    Key("optimizer.grad_clip_norm", Optional[_F], None, "global-norm clipping (None/0: off)"),
    Key("optimizer.weight_decay", _F, 0.0, "(adamw) decoupled weight decay"),
    Key("optimizer.momentum", Optional[_F], None, "(sgd) momentum in [0, 1)"),
    Key("param_groups", Sequence[tuple], [(".*", 1.0)],
        "[(regex, lr_mult or None=frozen)], first match wins, all parameters covered"),
    Key("batch_size", _I, MANDATORY, "global train batch (all devices, all microbatches)"),
    Key("num_train_steps", _I, MANDATORY, "optimizer updates"),
    Key("grad_accum_steps", _I, 1, "K microbatches per update, same update as the whole batch"),
    Key("regularizers", _SEQ_DICT, [], "[dict(name=, weight=, select=regex)] added to the loss"),
    # ---- multi-task weighting
    Key("weighting", Optional[dict], None, "loss weighting or gradient aggregator "
        "(None: equal) (docs/weighting.md)"),
    Key("weighting.name", _S, "equal",
        "loss weighting: equal | static | uncertainty | dwa | gradnorm | rlw | famo"),
    Key("weighting.aggregator", Optional[_S], UNSET,
        "gradient aggregator on the shared parameters: mean | upgrad | mgda | pcgrad | ..."),
    Key("weighting.mode", _S, UNSET,
        "gramian | jacobian | representation (unset: gramian where the aggregator allows)"),
    Key("weighting.shared", _S, UNSET, "regex of the shared parameters (unset: the scheme's)"),
    Options("weighting.options",
            (("weighting.aggregator", "aggregator", None),
             ("weighting.name", "loss weighting", "equal")),
            (), UNSET, "the method's options, e.g. dict(alpha=0.12) for gradnorm"),
    Key("weighting.log_task_gradients", _B, False,
        "loss weightings: log per-task gradient norms and cosines"),
    Key("weighting.gramian_engine", _S, "leaf", "leaf | rows (O(P) scratch, ~1.7x time)"),
    Key("weighting.gramian_chunk", _I, 1, "rows of G mapped at a time (gramian_engine='rows')"),
    # ---- transfer
    Key("transfer", Optional[dict], None, "a transfer strategy from an upstream workdir"),
    Key("transfer.strategy", _S, MANDATORY, "scratch | linear_probe | cached_probe[:K] | "
        "finetune | freeze_bottom:N | truncate:K"),
    Key("transfer.upstream", _S, UNSET, "upstream workdir or Hugging Face directory"),
    Key("transfer.trunk_lr_mult", _F, 1.0, "(finetune) trunk learning-rate multiplier"),
    Key("transfer.layer_decay", _F, 1.0, "(finetune) lr x decay^(blocks above)"),
    Key("transfer.finetune_truncated", _B, False, "(truncate) also train the kept blocks"),
    Key("init_from", Optional[dict], None, "partial load of a checkpoint before training"),
    Key("init_from.workdir", _S, MANDATORY, "workdir or Hugging Face directory to load"),
    Key("init_from.step", Optional[_I], None, "checkpoint step (None: the latest intact)"),
    Key("init_from.load", _S, ".*", "regex of the parameters to copy"),
    Key("init_from.skip", Optional[_S], None, "regex of parameters not to copy"),
    Key("init_from.heads", Optional[dict], None,
        "{target task: source task}: copy that task's row of the source's stacked heads"),
    # ---- seeds, devices, logging
    Key("seed", _I, 0, "init and data-order seed"),
    Key("num_seeds", _I, 1, "N replicas (seeds seed..seed+N-1) in one vmapped program"),
    Key("num_devices", Optional[_I], None, "use the first N devices (None: all)"),
    Key("mesh", Optional[dict], None, "a (data, model) mesh"),
    Key("mesh.model", _I, 1, "size of the model axis; data takes the rest"),
    Key("sharding", Union[_S, Sequence[tuple]], "replicated",
        "replicated | fsdp | tensor_parallel | [(regex, spec)] (mtl_jax/sharding.py)"),
    Key("eval_batch_size", _I, 512, "eval batch (padded with mask=False rows)"),
    Key("log_every_steps", _I, 100, "metrics.jsonl line every N steps"),
    Key("eval_every_steps", _I, 0, "validation every N steps (0: only at the end)"),
    Key("checkpoint_every_steps", _I, 500, "checkpoint every N steps (0: only at the end)"),
    Key("keep_checkpoints", _I, 3, "checkpoints kept (older ones are the fallback)"),
    Key("progress_bar", _B, True, "tqdm bar on stderr"),
    # ---- Δm% in results.json (dense_data)
    Key("delta_m", Optional[dict], None,
        "Δm% vs a baseline in results.json: dict(baseline=, metrics=None, average='metrics')"),
    Key("delta_m.baseline", Union[_S, Sequence[_S], dict], MANDATORY,
        "results.json path(s) of the baseline run(s), or {task: {metric: value}} (every split)"),
    Key("delta_m.metrics", Optional[dict], None,
        "{task: [metric, ...]} (None: each task's reported metrics but loss)"),
    Key("delta_m.average", _S, "metrics", "metrics (Maninis, Nash-MTL) | tasks (LibMTL)"),
    # ---- pipelines (mtl_jax/pipelines/, docs/pipelines.md)
    Key("pipeline", Optional[dict], None,
        "run several stages instead of one training run: dict(name=, **its options)"),
    Key("pipeline.name", _S, MANDATORY, "mtdnn"),
    Key("pipeline.tasks", Sequence[_S], MANDATORY,
        "(mtdnn) GLUE tasks: cola sst2 mrpc qqp stsb mnli qnli rte wnli"),
    Key("pipeline.encoder", _S, "", "(mtdnn) Hugging Face BERT directory ('': MiniLM)"),
    Key("pipeline.pooling", _S, "cls", "(mtdnn) encoder pooling for the heads"),
    Key("pipeline.max_length", _I, 128, "(mtdnn) tokens per (pair) sequence"),
    Key("pipeline.holdout", _F, 0.0,
        "(mtdnn) fraction of train held out for choices; dev is always the reported split"),
    Key("pipeline.max_examples", Optional[_I], None, "(mtdnn) first N train/dev examples"),
    Key("pipeline.finetune", Optional[Sequence[_S]], None,
        "(mtdnn) tasks fine-tuned in stage 3 (None: all)"),
    Key("pipeline.single_task", _B, False,
        "(mtdnn) also fine-tune the encoder on each task alone (baseline)"),
    Key("pipeline.stage2", dict, {}, "(mtdnn) config overrides for the multi-task stage"),
    Key("pipeline.stage3", dict, {},
        "(mtdnn) config overrides for per-task fine-tuning (and single_task)"),
    Key("pipeline.qnli_as", _S, "ranking",
        "(mtdnn) QNLI as ranking (grouped_ranking, MT-DNN) | classification"),
    Key("glue_dir", Optional[_S], None,
        "GLUE folder <dir>/<TASK>/{train,dev,test}.tsv (pipeline mtdnn)"),
)

BY_PATH: Dict[str, Any] = {e.path: e for e in SCHEMA}
TOP_LEVEL = tuple(e.path for e in SCHEMA if "." not in e.path)
REQUIRED = tuple(k for k in TOP_LEVEL if BY_PATH[k].default is MANDATORY)
DEFAULTS: Dict[str, Any] = {k: BY_PATH[k].default for k in TOP_LEVEL
                            if BY_PATH[k].default not in (MANDATORY, UNSET)}


def children(path: str) -> Tuple[str, ...]:
  """The explicit child keys of ``path`` (their last component)."""
  prefix = path + "."
  return tuple(p[len(prefix):] for p in BY_PATH if p.startswith(prefix)
               and "." not in p[len(prefix):])


def get(config, key):
  """``config[key]`` or its default."""
  return config.get(key, DEFAULTS.get(key))


def with_defaults(config: Mapping[str, Any]) -> Dict[str, Any]:
  """A plain dict of ``config`` with every absent top-level default filled in."""
  out = {k: _plain(v) for k, v in config.items()}
  for k, v in DEFAULTS.items():
    out.setdefault(k, _plain(v))
  return out


def _plain(v):
  return v.to_dict() if hasattr(v, "to_dict") else v
