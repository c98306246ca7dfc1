"""Image trunks through the trainer on mocked CelebA (tfds.testing.mock_data:
random records with celeb_a's features, nothing downloaded): hard sharing,
MMoE, freeze_bottom transfer, and configs/celeba_mtl.py:runlocal."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import celeba_mtl
from conftest import flat_params, tiny_config
from mtl_jax import partial_load, train
from mtl_jax.data.celeb_a import ATTRIBUTES

TRUNKS = {
    "resnet": dict(name="resnet", features=(8, 8), units_per_stage=(1, 1), stem="cifar",
                   stem_features=8, norm_groups=4),
    "vit": dict(name="vit", patch_size=4, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32),
}
TASKS = ("Smiling", "Male", "Young")


def _mock():
  return tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE)


def _config(trunk, sharing="hard", steps=3, **model):
  c = tiny_config()
  c.data = dict(name="celeb_a", image_size=8, attributes=TASKS, max_examples=16)
  c.tasks = [dict(name=a, kind="binary") for a in TASKS]
  c.model = dict(sharing=sharing, trunk=dict(TRUNKS[trunk]), **model)
  c.batch_size = 8
  c.eval_batch_size = 16
  c.num_train_steps = steps
  c.log_every_steps = 1
  c.checkpoint_every_steps = 0
  return c


def _finite(results, split="test"):
  for task in TASKS:
    assert np.isfinite(results[split][task]["loss"]), results
    assert results[split][task]["count"] == 16


@pytest.mark.parametrize("trunk", sorted(TRUNKS))
def test_hard_then_freeze_bottom(trunk, tmp_path):
  up, down = str(tmp_path / "up"), str(tmp_path / "down")
  with _mock():
    _finite(train.train_and_evaluate(_config(trunk), up))
    c = _config(trunk, steps=2)
    c.tasks = [dict(name="Smiling", kind="binary")]
    c.data.attributes = ("Smiling",)
    c.transfer = dict(strategy="freeze_bottom:1", upstream=up)
    train.train_and_evaluate(c, down)
  before = partial_load.load_checkpoint_params(up)
  after = flat_params(train.final_params(down))
  trunk_paths = [k for k in after if k.startswith("trunk/")]
  frozen = [k for k in trunk_paths if k.startswith("trunk/block_0/")]
  trained = [k for k in trunk_paths if k not in frozen]
  assert frozen and trained
  for k in frozen:  # the ResNet stem is inside block_0: frozen with it
    np.testing.assert_array_equal(after[k], before[k], err_msg=k)
  moved = [k for k in trained if not np.array_equal(after[k], before[k])]
  assert len(moved) == len(trained), sorted(set(trained) - set(moved))
  if trunk == "resnet":
    assert "trunk/block_0/stem_conv/kernel" in frozen
  else:  # ViT's embedding sits outside the blocks (like BERT's): it trains
    assert "trunk/embedding/kernel" in trained


@pytest.mark.parametrize("trunk", sorted(TRUNKS))
def test_mmoe(trunk, tmp_path):
  with _mock():
    results = train.train_and_evaluate(_config(trunk, "mmoe", steps=2, num_experts=2),
                                       str(tmp_path / "run"))
  _finite(results)
  params = flat_params(train.final_params(str(tmp_path / "run")))
  assert params["experts/block_1/" + ("unit_0/conv1/kernel" if trunk == "resnet"
                                      else "mlp_in/kernel")].shape[0] == 2  # one per expert


def test_celeba_config_runlocal_trains_on_mock_data(tmp_path):
  c = celeba_mtl.get_config("mgda_ub,runlocal")
  assert [t["name"] for t in c.tasks] == list(ATTRIBUTES) and len(ATTRIBUTES) == 40
  c.progress_bar = False
  with tfds.testing.mock_data(num_examples=80, policy=tfds.testing.MockPolicy.USE_CODE):
    assert tuple(tfds.data_source("celeb_a", split="train").dataset_info
                 .features["attributes"].keys()) == ATTRIBUTES
    results = train.train_and_evaluate(c, str(tmp_path / "run"))
  assert set(results["test"]) == set(ATTRIBUTES)
  for task in ATTRIBUTES:
    assert results["test"][task]["count"] == 64
    assert np.isfinite(results["test"][task]["loss"])
