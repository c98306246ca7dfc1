"""Up-front checks of config values: each bad value fails naming the key and the valid range.

``validate_config(config)`` runs before anything is built, so a
``num_train_steps=0`` or a ``dropout=1.0`` fails in milliseconds with a
message instead of a ZeroDivisionError deep in the pipeline, or (worse) a run
that trains nothing and reports a number. Registry names (dataset, sharing,
optimizer, ...) are checked where they are looked up; option names of the
optimizer are checked by ``optim.check_options``; those of the weighting by
``weighting.factory.check_weighting``. ``check_config_keys`` (unknown or
missing top-level keys, then the values) is what ``run.setup`` calls.
"""

import numbers
from typing import Any, Callable, Iterator, Tuple

from mtl_jax import config_keys, optim
from mtl_jax.config_keys import ConfigError  # noqa: F401  (re-exported)
from mtl_jax.weighting.factory import check_weighting


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _fail(key: str, value: Any, valid: str):
  raise ConfigError(f"config.{key} = {value!r}: must be {valid}")


def _check(key: str, value: Any, ok: Callable[[Any], bool], valid: str) -> None:
  if not ok(value):
    _fail(key, value, valid)


def _int_at_least(lo: int) -> Callable[[Any], bool]:
  return lambda v: _is_int(v) and v >= lo


def _to_dict(v):
  return v.to_dict() if hasattr(v, "to_dict") else v


def _walk(tree, prefix: str) -> Iterator[Tuple[str, str, Any]]:
  """(dotted key, leaf name, value) for every entry of nested dicts and lists."""
  tree = _to_dict(tree)
  if isinstance(tree, dict):
    for k, v in tree.items():
      yield f"{prefix}.{k}", k, v
      yield from _walk(v, f"{prefix}.{k}")
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      if isinstance(_to_dict(v), (dict, list, tuple)):
        yield from _walk(v, f"{prefix}[{i}]")


def _positive_ints(v) -> bool:
  return isinstance(v, (list, tuple)) and all(_is_int(x) and x >= 1 for x in v)


def _check_decoder(decoder) -> None:
  """``model.decoder`` (per-task dense decoders): its ``features`` is one width, not a list."""
  decoder = _to_dict(decoder)
  if decoder is None:
    return
  _check("model.decoder", decoder, lambda v: isinstance(v, dict) and "name" in v,
         "None or dict(name='conv' | 'aspp', **options) (docs/dense.md)")
  if "features" in decoder:
    _check("model.decoder.features", decoder["features"],
           lambda v: _is_int(v) and (v >= 1 or (v == -1 and decoder["name"] == "conv")),
           "a positive width (conv: -1 keeps the input's width)")
  if "rates" in decoder:
    _check("model.decoder.rates", decoder["rates"], _positive_ints,
           "a sequence of positive dilation rates, e.g. (12, 24, 36)")
  for name, lo in (("num_convs", 0), ("norm_groups", 1)):
    if name in decoder:
      _check(f"model.decoder.{name}", decoder[name], _int_at_least(lo), f"an integer >= {lo}")
  if "dropout" in decoder:
    _check("model.decoder.dropout", decoder["dropout"], lambda v: _is_number(v) and 0 <= v < 1,
           "a rate in [0, 1)")


def _check_model(model) -> None:
  model = _to_dict(model)
  if isinstance(model, dict) and "decoder" in model:  # its own rules (features is an int there)
    _check_decoder(model["decoder"])
    model = {k: v for k, v in model.items() if k != "decoder"}
  for key, name, v in _walk(model, "model"):
    if name == "features":
      _check(key, v, lambda v: _positive_ints(v) and len(v) > 0,
             "a non-empty sequence of positive layer widths, e.g. (256, 256)")
    elif name in ("head_hidden", "kernel_sizes", "strides"):
      _check(key, v, _positive_ints, "a sequence of positive integers")
    elif name == "convs_per_level":  # segnet
      _check(key, v, lambda v: isinstance(v, (list, tuple)) and all(_is_int(x) and x >= 0
                                                                    for x in v),
             "a sequence of integers >= 0 (extra convs per level)")
    elif name in ("num_experts", "num_gates", "num_shared_experts", "num_task_experts",
                  "num_levels", "num_selectors"):
      _check(key, v, _int_at_least(1), "an integer >= 1")
    elif name == "dropout":
      _check(key, v, lambda v: _is_number(v) and 0 <= v < 1, "a rate in [0, 1)")
    elif name == "task_embedding":  # ernie: number of task ids (0 / None: off)
      _check(key, v, lambda v: v is None or (_is_int(v) and v >= 0),
             "the number of task ids, an integer >= 0 (0: no task embedding)")


def _check_data(data) -> None:
  data = _to_dict(data)
  if "hide_rate" in data:
    _check("data.hide_rate", data["hide_rate"], lambda v: _is_number(v) and 0 <= v < 1,
           "a rate in [0, 1) (1 hides every train label: nothing is left to train on)")
  for task, rate in (_to_dict(data.get("hide_rates")) or {}).items():
    _check(f"data.hide_rates.{task}", rate, lambda v: _is_number(v) and 0 <= v < 1,
           "a rate in [0, 1) (1 hides every train label of the task)")


def _check_mesh(mesh, accum) -> None:
  mesh = _to_dict(mesh)
  _check("mesh", mesh, lambda v: v is None or (isinstance(v, dict) and set(v) <= {"model"}),
         "None or dict(model=M) (the data axis takes the remaining devices)")
  if mesh:
    _check("mesh.model", mesh.get("model", 1), _int_at_least(1), "an integer >= 1")
  _check("grad_accum_steps", accum, _int_at_least(1), "an integer >= 1")


def _check_regularizers(regs) -> None:
  if not isinstance(_to_dict(regs), (list, tuple)):
    _fail("regularizers", regs, "a list of dict(name=, weight=, select=...)")
  for i, reg in enumerate(regs):
    reg = _to_dict(reg)
    if not isinstance(reg, dict):
      _fail(f"regularizers[{i}]", reg, "a dict(name=, weight=, ...)")
    for field in ("name", "weight"):
      if field not in reg:
        raise ConfigError(f"config.regularizers[{i}] = {reg!r} has no {field!r}; every "
                          f"regularizer needs name= and weight= (a number >= 0)")
    _check(f"regularizers[{i}].weight", reg["weight"], lambda v: _is_number(v) and v >= 0,
           "a number >= 0")


def _check_delta_m(dm) -> None:
  """Shape of config.delta_m; files, tasks and metrics are checked by train before training."""
  if dm is None:
    return
  _check("delta_m", dm, lambda v: isinstance(v, dict) and "baseline" in v
         and set(v) <= {"baseline", "metrics", "average"},
         "None or dict(baseline=PATH | [PATH, ...] | {task: {metric: value}}, metrics=None, "
         "average='metrics')")
  b = _to_dict(dm["baseline"])
  _check("delta_m.baseline", b, lambda v: isinstance(v, str) or (
      isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(p, str) for p in v)) or (
      isinstance(v, dict) and all(isinstance(_to_dict(m), dict) for m in v.values())),
         "a results.json path, a list of them, or {task: {metric: value}}")
  _check("delta_m.metrics", _to_dict(dm.get("metrics")),
         lambda v: v is None or isinstance(v, dict), "None or {task: [metric, ...]}")
  _check("delta_m.average", dm.get("average", "metrics"), lambda v: v in ("metrics", "tasks"),
         "'metrics' (mean over every task metric) or 'tasks' (LibMTL: per-task means first)")


def validate_config(config) -> None:
  """Raises ConfigError naming the first key whose value is out of range."""
  get = lambda k: config_keys.get(config, k)  # noqa: E731
  _check("num_train_steps", get("num_train_steps"), _int_at_least(1), "an integer >= 1")
  for key in ("log_every_steps", "eval_every_steps", "checkpoint_every_steps"):
    _check(key, get(key), _int_at_least(0), "an integer >= 0 (0: only at the end)")
  _check("keep_checkpoints", get("keep_checkpoints"), _int_at_least(1),
         "an integer >= 1 (older checkpoints are the fallback for a corrupt newest one)")
  for key in ("batch_size", "eval_batch_size", "num_seeds"):
    _check(key, get(key), _int_at_least(1), "an integer >= 1")
  _check("seed", get("seed"), _is_int, "an integer")
  _check("num_devices", get("num_devices"), lambda v: v is None or (_is_int(v) and v >= 1),
         "None (every device) or an integer >= 1")
  _check("progress_bar", get("progress_bar"), lambda v: isinstance(v, bool), "True or False")
  init_from = _to_dict(get("init_from"))
  _check("init_from", init_from,
         lambda v: v is None or (isinstance(v, dict) and isinstance(v.get("workdir"), str)),
         "None or dict(workdir=PATH, step=None, load='.*', skip=None)")
  for key in ("transfer", "weighting"):
    _check(key, _to_dict(get(key)), lambda v: v is None or isinstance(v, dict), "None or a dict")
  if get("glue_dir") or get("pipeline"):  # a pipeline builds its stages' configs without them
    raise ConfigError("config.glue_dir and config.pipeline are read by a pipeline "
                      "(mtl_jax/pipelines/, through main.py), not by one training run")
  optim.check_options(config.optimizer)
  _check_model(config.model)
  if config.get("data") is not None:
    _check_data(config.data)
  for i, ds in enumerate(get("datasets") or ()):
    _check_data(ds)
  _check_mesh(get("mesh"), get("grad_accum_steps"))
  _check_regularizers(get("regularizers"))
  _check_delta_m(_to_dict(get("delta_m")))
  check_weighting(_to_dict(get("weighting")))
  from mtl_jax.models.dselect_k import check_entropy_regularizer  # the scheme owns its rule
  try:
    check_entropy_regularizer(_to_dict(config.model), _to_dict(get("regularizers")))
  except ValueError as e:
    raise ConfigError(str(e)) from None


def check_config_keys(config) -> None:
  """Unknown or missing top-level keys fail with the valid list (a typo is never ignored),
  then ``validate_config``."""
  valid = set(config_keys.TOP_LEVEL)
  unknown = sorted(set(config.keys()) - valid)
  if unknown:
    raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(valid)}")
  missing = [k for k in config_keys.REQUIRED if k not in config
             and not (k == "data" and config.get("datasets"))]  # datasets replace data
  if missing:
    raise ConfigError(f"config is missing required keys {missing}")
  validate_config(config)


def check_config_arg(arg: str, valid, config_file: str) -> None:
  """For a config file's ``get_config(arg)``: an unknown ``:arg`` part is an error, not a no-op."""
  parts = [p for p in (arg or "").split(",") if p]
  unknown = [p for p in parts if p not in valid]
  if unknown:
    raise ConfigError(f"{config_file}: unknown config argument(s) {unknown} in {arg!r}; "
                      f"valid: {sorted(valid)}")
