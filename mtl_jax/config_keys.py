"""The top-level config keys train_and_evaluate understands, with defaults.

Checked up front so that a typo (``num_train_step``) fails with the list of
valid keys instead of being silently ignored; ``check_config_keys`` then runs
``config_validation.validate_config`` so values out of range fail too.
"""

class ConfigError(ValueError):
  """A config key or value is invalid; the message names the key and the valid range."""


REQUIRED = ("data", "tasks", "model", "optimizer", "batch_size", "num_train_steps")

DEFAULTS = {
    "seed": 0,
    "num_seeds": 1,                 # N replicas (seeds seed..seed+N-1) in one vmapped program
    "param_groups": [(".*", 1.0)],
    "eval_batch_size": 512,
    "log_every_steps": 100,
    "eval_every_steps": 0,          # 0: evaluate only at the end
    "checkpoint_every_steps": 500,  # 0: checkpoint only at the end
    "keep_checkpoints": 3,
    "num_devices": None,            # None: every device (configs: placeholder(int), CLI-overridable)
    "progress_bar": True,
    "init_from": None,              # dict(workdir=, step=None, load=".*", skip="heads/.*")
    "transfer": None,               # dict(strategy=, upstream=, ...): see mtl_jax/transfer.py
    "weighting": None,              # dict(name=loss weighting | aggregator=..., ...): docs/weighting.md
    "regularizers": [],             # [dict(name=, weight=, select=regex, ...)]
    "grad_accum_steps": 1,          # K microbatches per update (mtl_jax/step.py)
}


def check_config_keys(config) -> None:
  valid = set(REQUIRED) | set(DEFAULTS)
  unknown = sorted(set(config.keys()) - valid)
  if unknown:
    raise ValueError(f"unknown config keys {unknown}; valid keys: {sorted(valid)}")
  missing = [k for k in REQUIRED if k not in config]
  if missing:
    raise ValueError(f"config is missing required keys {missing}")
  from mtl_jax import config_validation  # pylint: disable=g-import-not-at-top  (imports optim)
  config_validation.validate_config(config)


def get(config, key):
  """``config[key]`` or its default."""
  return config.get(key, DEFAULTS.get(key))
