"""Downstream transfer from configs/mnist1d_upstream.py to new digits (5-9).

  python -m mtl_jax.main --config=configs/mnist1d_transfer.py:linear_probe,small \
      --workdir=/tmp/down --config.transfer.upstream=/tmp/upstream

Argument: ``STRATEGY[,small|large][,different]`` with STRATEGY one of
scratch, linear_probe, cached_probe[:K], finetune, freeze_bottom:N,
truncate:K (see mtl_jax/transfer.py). "small" = 10 train signals per class,
"large" = 500; "different" spatially shuffles the signals.

Expected test accuracy (experiments/transfer_scenarios, 5 seeds):
| strategy     | small,similar | large,similar |
| scratch      | 36.6 %        | 94.2 %        |
| linear_probe | 52.6 %        | 79.6 %        |
| finetune     | 53.4 %        | 90.2 %        |
"""

import ml_collections

from configs import mnist1d_upstream
from mtl_jax import transfer
from mtl_jax.config_validation import ConfigError, check_config_arg


def get_config(arg: str = "linear_probe,small") -> ml_collections.ConfigDict:
  parts = arg.split(",")
  strategy, size = parts[0], "large" if "large" in parts else "small"
  if strategy.split(":")[0] not in transfer.STRATEGIES:
    raise ConfigError(f"configs/mnist1d_transfer.py: unknown strategy {strategy!r} in {arg!r}; "
                      f"valid: {list(transfer.STRATEGIES)} (freeze_bottom:N, truncate:K, "
                      f"cached_probe[:K])")
  check_config_arg(",".join(parts[1:]), ("small", "large", "different"),
                   "configs/mnist1d_transfer.py")
  if "small" in parts and "large" in parts:
    raise ConfigError(f"configs/mnist1d_transfer.py: {arg!r} asks for both small and large")
  c = mnist1d_upstream.get_config()
  c.data = dict(name="mnist1d", dataset_args={"num_samples": 10000}, classes=[5, 6, 7, 8, 9],
                shuffle_spatial="different" in parts,
                train_per_class=10 if size == "small" else 500)
  c.batch_size = 50 if size == "small" else 100
  c.num_train_steps = 300 if size == "small" else 1500
  c.checkpoint_every_steps = 0
  c.transfer = dict(strategy=strategy, upstream="", trunk_lr_mult=0.1, layer_decay=1.0,
                    finetune_truncated=False)
  return c
