"""Every config file builds, and every registered name it uses exists (no training)."""

import glob
import importlib
import os

import pytest

from conftest import ROOT
from mtl_jax import config_validation, tasks, transfer
from mtl_jax.data import DATASETS
from mtl_jax.models.sharing import SHARING

CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if not p.endswith("__init__.py"))


@pytest.mark.parametrize("name", CONFIGS)
def test_config_is_valid(name):
  module = importlib.import_module(f"configs.{name}")
  assert module.__doc__ and "python -m mtl_jax.main" in module.__doc__, "docstring must give the command"
  c = module.get_config()
  if c.get("pipeline"):  # several stages (mtl_jax/pipelines/): check every stage's config
    from mtl_jax.pipelines import mtdnn
    c.glue_dir = "/some/glue"
    for stage in mtdnn.stage_configs(c, "/some/workdir").values():
      _check_training_config(stage)
    return
  _check_training_config(c)


def _check_training_config(c):
  config_validation.check_config_keys(c)
  tasks.specs_from_config(c.tasks)
  for d in c.get("datasets") or [c.data]:  # several datasets (docs/datasets.md) or one
    assert d["name"] in DATASETS
  assert c.model.get("sharing", "hard") in SHARING
  if c.get("transfer"):
    c.transfer.upstream = "/some/workdir"
    transfer.plan(c)


def test_transfer_config_arguments():
  from configs import mnist1d_transfer
  c = mnist1d_transfer.get_config("freeze_bottom:1,large,different")
  assert c.transfer.strategy == "freeze_bottom:1"
  assert c.data.train_per_class == 500 and c.data.shuffle_spatial
