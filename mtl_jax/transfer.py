"""Upstream -> downstream transfer strategies, each one config switch.

``config.transfer = dict(strategy=..., upstream=WORKDIR, trunk_lr_mult=0.1,
layer_decay=1.0)`` rewrites the config before training:

| strategy          | trunk init | trainable                         |
|-------------------|------------|-----------------------------------|
| scratch           | random     | everything                        |
| linear_probe      | upstream   | heads only (trunk frozen)         |
| cached_probe[:K]  | upstream   | heads only, trained on trunk features computed once (first K blocks) |
| finetune          | upstream   | everything; trunk lr x trunk_lr_mult, block i x layer_decay^(n-1-i) |
| freeze_bottom:N   | upstream   | blocks >= N and heads              |
| truncate:K        | upstream, first K blocks only | heads (+ the K blocks if finetune_truncated) |

"Trunk" is whatever the sharing scheme declares as its body in its
``ParamLayout`` (``trunk/`` for hard sharing, the stacked ``columns/`` of
single_task/soft/cross_stitch, ``experts/`` and the gates of MMoE), and its
blocks are ``<layout.blocks>/block_i``; the upstream checkpoint must have
the same scheme's body. ``cached_probe`` needs one trunk shared by all tasks
(``layout.cacheable``) and fails clearly otherwise.

The rewrite only fills ordinary keys (``init_from``, ``param_groups``,
``model.trunk.num_blocks``), so every strategy is also reachable by hand.
"""

import copy
import dataclasses
from typing import Optional

import jax
import numpy as np

from mtl_jax.data.base import ArrayDataset
from mtl_jax.models.sharing import layout as sharing_layout
from mtl_jax.models.trunks import build_trunk

STRATEGIES = ("scratch", "linear_probe", "cached_probe", "finetune", "freeze_bottom", "truncate")
OPTIONS = ("strategy", "upstream", "trunk_lr_mult", "layer_decay", "finetune_truncated")


@dataclasses.dataclass
class Plan:
  """What train_and_evaluate must do beyond the rewritten config."""
  config: object
  cache_trunk: Optional[dict] = None   # trunk config whose features replace the inputs
  upstream: Optional[str] = None


def _parse(strategy: str):
  name, _, arg = strategy.partition(":")
  if name not in STRATEGIES:
    raise KeyError(f"unknown transfer strategy {strategy!r}; valid: {list(STRATEGIES)} "
                   f"(freeze_bottom:N and truncate:K take a block count, cached_probe:K optionally)")
  if name in ("freeze_bottom", "truncate") and not arg.isdigit():
    raise ValueError(f"transfer strategy {name!r} needs a block count, e.g. '{name}:2'")
  if arg and not arg.isdigit():
    raise ValueError(f"transfer strategy {strategy!r}: {arg!r} is not a block count")
  return name, (int(arg) if arg else None)


def _num_blocks(trunk_config) -> int:
  if "features" in trunk_config:
    return len(trunk_config["features"])
  if "num_layers" in trunk_config:
    return int(trunk_config["num_layers"])
  raise ValueError(f"cannot count the blocks of trunk {trunk_config.get('name')!r}: it has "
                   "neither `features` nor `num_layers`")


def _block_rules(prefix, blocks, mult):
  return [(f"{prefix}/block_{i}/.*", mult) for i in blocks]


def plan(config) -> Optional[Plan]:
  """Resolves ``config.transfer`` into a plain config (a copy); None without transfer."""
  t = config.get("transfer")
  if not t:
    return None
  t = dict(t)
  unknown = sorted(set(t) - set(OPTIONS))
  if unknown:
    raise ValueError(f"transfer: unknown options {unknown}; valid: {list(OPTIONS)}")
  name, k = _parse(t["strategy"])
  config = copy.deepcopy(config)
  with config.unlocked():
    del config["transfer"]
    if name == "scratch":
      config.param_groups = [(".*", 1.0)]
      return Plan(config)
    upstream = t.get("upstream")
    if not upstream:
      raise ValueError(f"transfer strategy {name!r} needs transfer.upstream (a workdir)")
    trunk = config.model.trunk
    n = _num_blocks(trunk)
    scheme = config.model.get("sharing", "hard")
    lay = sharing_layout(scheme)
    body, blocks = lay.body, lay.blocks
    config.init_from = dict(workdir=upstream, load=body)
    mult = float(t.get("trunk_lr_mult", 1.0))
    decay = float(t.get("layer_decay", 1.0))
    if name == "linear_probe":
      config.param_groups = [(body, None), (".*", 1.0)]
    elif name == "finetune":
      # Body parameters outside the blocks (MMoE gates, cross-stitch units) train at mult.
      config.param_groups = [(f"{blocks}/block_{i}/.*", mult * decay ** (n - 1 - i))
                             for i in range(n)] + [(body, mult), (".*", 1.0)]
    elif name == "freeze_bottom":
      if k > n:
        raise ValueError(f"freeze_bottom:{k} but the trunk has {n} blocks")
      config.param_groups = (_block_rules(blocks, range(k), None)
                             + _block_rules(blocks, range(k, n), mult)
                             + [(body, mult), (".*", 1.0)])
    elif name == "truncate":
      if not 1 <= k <= n:
        raise ValueError(f"truncate:{k} needs 1 <= K <= {n} (the trunk's blocks)")
      trunk.num_blocks = k
      frozen = not t.get("finetune_truncated", False)
      config.param_groups = [(body, None if frozen else mult), (".*", 1.0)]
    elif name == "cached_probe":
      if not lay.cacheable:
        raise ValueError(f"transfer strategy 'cached_probe' needs one trunk shared by all tasks "
                         f"(sharing 'hard' or 'pooled'); sharing {scheme!r} has per-task or "
                         f"per-expert bodies ({body}): use linear_probe instead")
      cache_trunk = trunk.to_dict() if hasattr(trunk, "to_dict") else dict(trunk)
      if k is not None:
        if not 1 <= k <= n:
          raise ValueError(f"cached_probe:{k} needs 1 <= K <= {n} (the trunk's blocks)")
        cache_trunk["num_blocks"] = k
      config.model.trunk = dict(name="identity")
      config.init_from = None
      config.param_groups = [(".*", 1.0)]
      return Plan(config, cache_trunk=cache_trunk, upstream=upstream)
  return Plan(config)


def trunk_features(trunk_config, trunk_params, inputs, batch_size: int = 1024) -> np.ndarray:
  """Runs a trunk (eval mode) over ``inputs`` (an array or a dict of arrays) in batches;
  returns float32 features."""
  trunk = build_trunk(trunk_config)
  apply = jax.jit(lambda x: trunk.apply({"params": trunk_params}, x, train=False))
  n = len(jax.tree.leaves(inputs)[0])
  out = [np.asarray(apply(jax.tree.map(lambda x: x[i:i + batch_size], inputs)))
         for i in range(0, n, batch_size)]
  return np.concatenate(out).astype(np.float32)


def cache_features(splits, trunk_config, upstream: str):
  """Replaces every split's inputs by the frozen upstream trunk's features.

  ``upstream`` is a workdir or a Hugging Face checkpoint directory (as ``init_from``).
  """
  from mtl_jax import partial_load, paths
  params = paths.unflatten(partial_load.load_checkpoint_params(upstream))
  if "trunk" not in params:
    raise ValueError(f"cached_probe: the checkpoint in {upstream} has no 'trunk' parameters")
  return {name: ArrayDataset(trunk_features(trunk_config, params["trunk"], ds.inputs),
                             ds.labels, ds.mask) for name, ds in splits.items()}
