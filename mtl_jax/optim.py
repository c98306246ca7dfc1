"""Optimizer from config: regex parameter groups, frozen groups, lr multipliers.

``config.param_groups`` is an ordered list of ``(regex, lr_mult)`` rules on
``/``-joined parameter paths (``trunk/block_0/Dense_0/kernel``). Each regex
must match the whole path; the first matching rule wins; every parameter must
be covered. ``lr_mult=None`` freezes the group: optax gets ``set_to_zero()``
for it and the train step stops gradients into it, so XLA prunes its backward
pass instead of computing gradients that are thrown away.
"""

import re
from typing import Any, List, Optional, Sequence, Tuple

import jax
import optax

from mtl_jax import paths

from mtl_jax.config_keys import ConfigError

FROZEN = "frozen"


def _group_name(mult: Optional[float]) -> str:
  return FROZEN if mult is None else f"lr_x{mult:g}"


def label_params(params, rules: Sequence[Tuple[str, Optional[float]]]) -> Tuple[Any, List[str]]:
  """Maps every parameter path to its group name; returns (labels tree, log lines).

  Raises ValueError for a bad multiplier or for parameters no rule covers.
  """
  compiled = []
  for rule in rules:
    if len(rule) != 2:
      raise ValueError(f"param_groups rule {rule!r} must be (regex, lr_mult or None)")
    pattern, mult = rule
    if mult is not None and not mult > 0:
      raise ValueError(f"param_groups rule {pattern!r}: lr_mult must be > 0 or None "
                       f"(frozen), got {mult}")
    compiled.append((re.compile(pattern), pattern, mult))
  flat = paths.flatten(params)
  labels, log, uncovered = {}, [], []
  for path in flat:
    for regex, pattern, mult in compiled:
      if regex.fullmatch(path):
        labels[path] = _group_name(mult)
        log.append(f"{path:60s} {labels[path]:10s} (rule {pattern!r})")
        break
    else:
      uncovered.append(path)
  if uncovered:
    raise ValueError(f"param_groups cover no rule for {uncovered}; add a final ('.*', 1.0)")
  used = {line.rsplit("(rule ", 1)[1][:-1] for line in log}
  idle = [pattern for _, pattern, mult in compiled if mult is None and repr(pattern) not in used]
  if idle:  # a freeze that freezes nothing is a typo, not a no-op
    raise ValueError(f"param_groups freeze rules {idle} match no parameter (or only ones an "
                     f"earlier rule took); paths look like {list(flat)[:6]}")
  return paths.unflatten(labels), log


def trainable_mask(labels) -> Any:
  """True for parameters that are trained, False for frozen ones."""
  return jax.tree.map(lambda l: l != FROZEN, labels)


def learning_rate_schedule(opt_config, num_train_steps: int) -> optax.Schedule:
  lr = opt_config["learning_rate"]
  name = opt_config.get("schedule", "constant")
  warmup = int(opt_config.get("warmup_steps", 0))
  if name == "constant":
    main = optax.constant_schedule(lr)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(lr, max(num_train_steps - warmup, 1))
  elif name == "linear":
    main = optax.linear_schedule(lr, 0.0, max(num_train_steps - warmup, 1))
  else:
    raise KeyError(f"unknown schedule {name!r}; valid names: ['constant', 'cosine', 'linear']")
  if warmup:
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), main], [warmup])
  return main


# Options every optimizer reads, and the ones only some read: anything else
# (a typo, or weight_decay on adam) would be silently ignored, so it is an error.
COMMON_OPTIONS = ("name", "learning_rate", "schedule", "warmup_steps", "grad_clip_norm")
OPTIONS = {"adam": (), "adamw": ("weight_decay",), "sgd": ("momentum",)}


def check_options(opt_config) -> None:
  """Raises ConfigError naming an option the chosen optimizer does not read, or a bad value."""
  opt = dict(opt_config)
  name = opt.get("name", "adam")
  if name not in OPTIONS:
    raise KeyError(f"unknown optimizer {name!r}; valid names: {sorted(OPTIONS)}")
  valid = COMMON_OPTIONS + OPTIONS[name]
  unknown = sorted(set(opt) - set(valid))
  if unknown:
    used_by = {k: [n for n, o in OPTIONS.items() if k in o] for k in unknown}
    hint = "; ".join(f"{k!r} is read only by {v}" for k, v in used_by.items() if v)
    raise ConfigError(f"optimizer {name!r}: unknown option(s) {unknown}"
                     f"{' (' + hint + ')' if hint else ''}; valid options: {sorted(valid)}")
  if "learning_rate" not in opt:
    raise ConfigError(f"config.optimizer.learning_rate is required (optimizer {name!r})")
  checks = {"learning_rate": (lambda v: v > 0, "> 0"),
            "warmup_steps": (lambda v: v >= 0 and float(v).is_integer(), "an integer >= 0"),
            "grad_clip_norm": (lambda v: v is None or v >= 0, "None or >= 0 (0/None: no clipping)"),
            "weight_decay": (lambda v: v >= 0, ">= 0"),
            "momentum": (lambda v: v is None or 0 <= v < 1, "None or in [0, 1)")}
  for key, (ok, valid_range) in checks.items():
    if key in opt:
      v = opt[key]
      good = (v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))) and ok(v)
      if not good:
        raise ConfigError(f"config.optimizer.{key} = {v!r}: must be {valid_range}")


def _base_optimizer(opt_config, lr) -> optax.GradientTransformation:
  name = opt_config.get("name", "adam")
  wd = opt_config.get("weight_decay", 0.0)
  if name == "adam":
    return optax.adam(lr)
  if name == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  if name == "sgd":
    return optax.sgd(lr, momentum=opt_config.get("momentum", None) or None)
  raise KeyError(f"unknown optimizer {name!r}; valid names: ['adam', 'adamw', 'sgd']")


def make_optimizer(opt_config, rules, params, num_train_steps: int):
  """Returns (optax transform, parameter labels tree, log lines)."""
  check_options(opt_config)
  labels, log = label_params(params, rules)
  schedule = learning_rate_schedule(opt_config, num_train_steps)
  transforms = {}
  for group in set(jax.tree.leaves(labels)):
    if group == FROZEN:
      transforms[group] = optax.set_to_zero()
    else:
      mult = float(group[len("lr_x"):])
      transforms[group] = _base_optimizer(opt_config, lambda step, m=mult: m * schedule(step))
  tx = optax.multi_transform(transforms, labels)
  clip = opt_config.get("grad_clip_norm", None)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, labels, log
