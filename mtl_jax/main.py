"""Entry point.

  python -m mtl_jax.main --config=configs/quickstart.py --workdir=/tmp/run \
      [--config.num_train_steps=1000 ...]

Rerunning the same command on the same workdir resumes from its last
checkpoint. Multi-host: pass --coordinator_address/--num_processes/
--process_id to every process (or the MTL_JAX_* environment variables; see
mtl_jax/parallel.py).
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mtl_jax import parallel, train

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (get_config), optionally :arg.",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and results.")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietOrbax:
  """Drops orbax's per-save INFO lines, which drown the run's own log."""

  def filter(self, record):
    return record.levelno >= 30 or "/orbax/" not in record.pathname


def main(argv):
  logging.get_absl_handler().addFilter(_QuietOrbax())
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  parallel.initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes,
                                  FLAGS.process_id)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except train.TrainingPreempted as e:
    logging.warning("%s", e)
    sys.exit(143)


if __name__ == "__main__":
  app.run(main)
