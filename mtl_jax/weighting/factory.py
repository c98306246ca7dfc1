"""``config.weighting`` -> the train-step strategy: the one module above the strategies.

``strategy.py`` is the interface, the four strategy modules implement it, and
this module, which imports them, picks one; so imports run one way. The
checks that need no parameters (``check_weighting``) also run from
``config_validation.validate_config``, before any data is loaded.
"""

from typing import Any, Dict, NamedTuple, Optional

from mtl_jax import paths
from mtl_jax.config_keys import ConfigError
from mtl_jax.weighting.base import AGGREGATORS, GramianWeighted
from mtl_jax.weighting.gramian_strategy import ENGINES, GramianStrategy
from mtl_jax.weighting.jacobian_strategy import JacobianStrategy
from mtl_jax.weighting.loss import LOSS_WEIGHTINGS
from mtl_jax.weighting.loss_strategy import LossWeightingStrategy
from mtl_jax.weighting.representation_strategy import RepresentationStrategy
from mtl_jax.weighting.strategy import WeightingStrategy

OPTIONS = ("name", "aggregator", "mode", "shared", "options", "log_task_gradients",
           "gramian_engine", "gramian_chunk")
MODES = ("gramian", "jacobian", "representation")


class Choice(NamedTuple):
  """What ``config.weighting`` asks for, checked."""
  cls: Any                # the aggregator or loss-weighting class
  options: Dict[str, Any]
  mode: Optional[str]     # the aggregator path; None for a loss weighting
  config: Dict[str, Any]


def check_weighting(weighting_config) -> Choice:
  """Every check of ``config.weighting`` that needs no parameters; raises naming the key."""
  cfg = dict(weighting_config or {})
  unknown = sorted(set(cfg) - set(OPTIONS))
  if unknown:
    raise ConfigError(f"weighting: unknown options {unknown}; valid: {list(OPTIONS)}")
  options = dict(cfg.get("options") or {})
  mode = cfg.get("mode")
  if mode not in (None,) + MODES:
    raise ConfigError(f"weighting.mode must be one of {list(MODES)}, got {mode!r}")
  if not cfg.get("aggregator"):
    for key in ("gramian_engine", "gramian_chunk"):
      if key in cfg:
        raise ConfigError(f"weighting.{key} applies to aggregators in mode='gramian' only, "
                          f"not to the loss weighting {cfg.get('name', 'equal')!r}; set "
                          "weighting.aggregator (e.g. 'upgrad') to use it")
    if "mode" in cfg:
      raise ConfigError("weighting.mode applies to aggregators only; a loss weighting "
                        f"({cfg.get('name', 'equal')!r}) has no mode")
    return Choice(LOSS_WEIGHTINGS.get(cfg.get("name", "equal")), options, None, cfg)
  if cfg.get("name", "equal") != "equal":
    raise ConfigError("weighting: use either a loss weighting (name) or an aggregator, not both")
  cls = AGGREGATORS.get(cfg["aggregator"])
  gramian_weighted = issubclass(cls, GramianWeighted)
  mode = mode or ("gramian" if gramian_weighted else "jacobian")
  if mode in ("gramian", "representation") and not gramian_weighted:
    raise ConfigError(f"aggregator {cfg['aggregator']!r} is not Gramian-weighted (it needs the "
                      f"Jacobian itself), so it cannot run with mode={mode!r}; use "
                      "mode='jacobian'")
  for key in ("gramian_engine", "gramian_chunk"):
    if key in cfg and mode != "gramian":
      raise ConfigError(f"weighting.{key} applies to mode='gramian' only, not mode={mode!r}")
  if "gramian_chunk" in cfg and cfg.get("gramian_engine") != "rows":
    raise ConfigError("weighting.gramian_chunk applies to gramian_engine='rows' only")
  if cfg.get("gramian_engine", "leaf") not in ENGINES:
    raise ConfigError(f"weighting.gramian_engine must be one of {list(ENGINES)}, got "
                      f"{cfg['gramian_engine']!r}")
  return Choice(cls, options, mode, cfg)


def last_block_kernel(params, blocks: str) -> str:
  """Regex for the kernel(s) of the last ``<blocks>/block_i`` (GradNorm's default layer)."""
  prefix = blocks.split("/")
  found = sorted({int(k[len(prefix)][len("block_"):]) for k in
                  (tuple(p.split("/")) for p in paths.flatten(params))
                  if k[:len(prefix)] == tuple(prefix) and len(k) > len(prefix)
                  and k[len(prefix)].startswith("block_")})
  if not found:
    raise ValueError(f"no {blocks}/block_i parameters to pick the last shared layer from; "
                     "pass options.layer_regex")
  return f"{blocks}/block_{found[-1]}/.*kernel"


def build_strategy(weighting_config, num_tasks: int, params, shared: str = "trunk/.*",
                   blocks: str = "trunk") -> WeightingStrategy:
  """The strategy ``config.weighting`` asks for.

  ``shared`` and ``blocks`` are the sharing scheme's declared defaults (its
  ``ParamLayout``); ``config.weighting.shared`` overrides ``shared``.
  """
  choice = check_weighting(weighting_config)
  cfg, options = choice.config, dict(choice.options)
  shared = cfg.get("shared", shared)
  if choice.mode is not None:
    aggregator = choice.cls(**options)
    if choice.mode == "representation":
      return RepresentationStrategy(aggregator, num_tasks)
    paths.require_match(params, shared, "weighting.shared")
    if choice.mode == "gramian":
      return GramianStrategy(aggregator, num_tasks, paths.mask(params, shared),
                             engine=cfg.get("gramian_engine", "leaf"),
                             chunk=cfg.get("gramian_chunk", 1))
    return JacobianStrategy(aggregator, num_tasks, paths.mask(params, shared))
  cls = choice.cls
  if cls.needs_layer_grad_norms and "layer_regex" not in options:
    options["layer_regex"] = last_block_kernel(params, blocks)
  method = cls(num_tasks=num_tasks, **options)
  log = bool(cfg.get("log_task_gradients", False))
  if log:
    paths.require_match(params, shared, "weighting.shared")
  layer_mask = None
  if method.needs_layer_grad_norms:
    paths.require_match(params, method.layer_regex, f"{cfg.get('name')}: layer_regex")
    layer_mask = paths.mask(params, method.layer_regex)
  return LossWeightingStrategy(method, num_tasks, paths.mask(params, shared) if log else None,
                               layer_mask)
