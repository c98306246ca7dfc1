"""Multi-stage programs: one command, several training runs, each in its own workdir.

``config.pipeline = dict(name=<registered pipeline>, **its options)``; main.py
hands such a config to ``run`` instead of training it directly. A pipeline
builds an ordinary config per stage, so every stage is a normal run
(validated, checkpointed, resumable) and can be rerun by hand from its
workdir's config.json.
"""

from mtl_jax.pipelines import mtdnn  # noqa: F401  (registers "mtdnn")
from mtl_jax.pipelines.base import PIPELINES


def run(config, workdir: str) -> dict:
  """Runs ``config.pipeline`` in ``workdir``; returns its results."""
  name = dict(config.pipeline).get("name")
  if not name:
    raise ValueError("config.pipeline needs `name` (a registered pipeline, e.g. 'mtdnn')")
  return PIPELINES.get(name)(config, workdir)
