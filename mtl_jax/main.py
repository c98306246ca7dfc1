"""Entry point.

  python -m mtl_jax.main --config=configs/quickstart.py --workdir=/tmp/run \
      [--config.num_train_steps=1000 --config.model.route_heads=True ...] [--print_config]

Any documented key (mtl_jax/config_keys.py) can be set with --config.KEY=VALUE,
whether or not the config file sets it; --print_config prints the resolved
config (what workdir/config.json stores) and exits. Rerunning the same
command on the same workdir resumes from its last checkpoint. Multi-host:
pass --coordinator_address/--num_processes/--process_id to every process (or
the MTL_JAX_* environment variables; see mtl_jax/parallel.py).
"""

import os
import sys

from absl import app, flags, logging

from mtl_jax import config_cli, parallel, train
from mtl_jax.config_keys import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_string("config", None, "Config file (get_config), optionally :arg; then "
                    "--config.KEY=VALUE for any documented key (mtl_jax/config_keys.py).")
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_bool("print_config", False, "Print the resolved config (file, --config.* "
                  "overrides, top-level defaults: what workdir/config.json stores) and exit.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config"])

_OVERRIDES = []  # the --config.KEY=VALUE arguments, which absl never sees


def parse_flags(argv):
  """absl's parsing of everything but the ``--config.KEY=VALUE`` overrides."""
  rest, _OVERRIDES[:] = config_cli.split_argv(argv)
  return app.parse_flags_with_usage(rest)


def _config_error(e: ConfigError):
  """A bad config is the user's input, not a bug: its message alone, no traceback."""
  print(f"config error: {e}", file=sys.stderr)
  sys.exit(2)


class _QuietOrbax:
  """Drops orbax's per-save INFO lines, which drown the run's own log."""

  def filter(self, record):
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def main(argv):
  logging.get_absl_handler().addFilter(_QuietOrbax())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    config = config_cli.resolve(config_cli.load_config(FLAGS.config), _OVERRIDES)
  except ConfigError as e:
    _config_error(e)
  if FLAGS.print_config:
    print(config_cli.to_json(config))
    return
  workdir = FLAGS.workdir
  if not workdir and config.get("pipeline"):  # a pipeline's stages live under one folder
    workdir = os.path.join("workdirs", str(dict(config.pipeline).get("name", "pipeline")))
    print(f"--workdir not given: the pipeline runs in {os.path.abspath(workdir)}", flush=True)
  if not workdir:
    raise app.UsageError("--workdir is required (unless --print_config)")
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)
  try:
    if config.get("pipeline"):  # several stages, each its own run (mtl_jax/pipelines/)
      from mtl_jax import pipelines
      pipelines.run(config, workdir)
    else:
      train.train_and_evaluate(config, workdir)
  except ConfigError as e:  # checked up front (config_validation), so nothing has trained
    _config_error(e)
  except train.TrainingPreempted as e:
    logging.warning("%s", e)
    sys.exit(143)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
