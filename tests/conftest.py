"""Shared test helpers: tiny configs that train in seconds on CPU."""

import os
import sys

import ml_collections
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def tiny_config(**overrides) -> ml_collections.ConfigDict:
  """Quickstart shrunk to a few steps, no progress bar."""
  from configs import quickstart
  config = quickstart.get_config()
  config.num_train_steps = 20
  config.batch_size = 32
  config.eval_batch_size = 512
  config.log_every_steps = 5
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 10
  config.progress_bar = False
  config.model.trunk.features = (32, 32)
  for k, v in overrides.items():
    config[k] = v
  return config


@pytest.fixture
def workdir(tmp_path):
  return str(tmp_path / "run")
