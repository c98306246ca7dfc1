"""End to end (slow file): configs/nyuv2_mtl.py and cityscapes_mtl.py train through
train_and_evaluate at their ``runlocal`` size and write every task's metrics and Δm% to
results.json; and the backbone-transfer recipe: a ``resnet`` classifier trained on an image
task, then a ``dilated_resnet`` + ASPP segmentation model initialised from its checkpoint,
whose encoder starts (and, frozen, stays) bitwise equal to the upstream's."""

import json

import numpy as np
import pytest

from configs import cityscapes_mtl, nyuv2_mtl
from conftest import flat_params
from mtl_jax import config_validation, metrics, train
from mtl_jax.data import DATASETS
from mtl_jax.data.base import ArrayDataset, DataSplits
from mtl_jax.partial_load import load_checkpoint_params

NYU_METRICS = {"segmentation": {"miou", "pixel_accuracy"}, "depth": {"abs_err", "rel_err"},
               "normal": {"mean_angle", "median_angle", "within_11_25", "within_22_5",
                          "within_30"}}


@pytest.mark.parametrize("module,arg", [(nyuv2_mtl, "nash_mtl,runlocal"),
                                        (cityscapes_mtl, "upgrad,deeplab,runlocal")])
def test_config_writes_every_metric_and_delta_m(module, arg, tmp_path):
  c = module.get_config(arg)
  config_validation.check_config_keys(c)
  res = train.train_and_evaluate(c, str(tmp_path))
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  tasks = [t["name"] for t in c.tasks]
  for task in tasks:
    assert NYU_METRICS[task] <= set(saved["test"][task]), task
    assert all(np.isfinite(saved["test"][task][m]) for m in NYU_METRICS[task])
  want = metrics.delta_m({t: saved["test"][t] for t in tasks}, module.SINGLE_TASK,
                         {t: sorted(NYU_METRICS[t]) for t in tasks})
  np.testing.assert_allclose(saved["delta_m"]["test"], want, rtol=1e-9)
  assert res["delta_m"]["test"] == saved["delta_m"]["test"]


def test_config_arguments_are_checked():
  assert nyuv2_mtl.get_config("cagrad,split").model.sharing == "hard"
  assert nyuv2_mtl.get_config("single").model.sharing == "single_task"
  assert nyuv2_mtl.get_config("").model.sharing == "mtan"
  deeplab = cityscapes_mtl.get_config("deeplab").model
  assert deeplab.trunk.name == "dilated_resnet" and deeplab.decoder.name == "aspp"
  with pytest.raises(config_validation.ConfigError, match=r"argument 'upgrad,segnett'.*ARCH one"):
    nyuv2_mtl.get_config("upgrad,segnett")


# ------------------------------------------------------------------- backbone transfer

CLASSES = "_dense_scene_class_test"
if CLASSES not in DATASETS:
  @DATASETS.register(CLASSES)
  def _scene_classes(size: int = 32, num: int = 24) -> DataSplits:  # pylint: disable=unused-variable
    """dense_shapes images labelled with their most frequent segmentation class."""
    def split(k):
      d = DATASETS.get("dense_shapes")(size=size, num_train=num, num_validation=1, num_test=0,
                                       seed=k).train
      seg = d.labels["segmentation"].reshape(len(d), -1)
      top = np.array([np.bincount(s[s >= 0], minlength=6).argmax() for s in seg], np.int32)
      return ArrayDataset(d.inputs, {"scene": top}, {"scene": np.ones(len(d), bool)})
    return DataSplits(split(0), split(1), None)

RESNET = dict(features=(4, 4, 8, 8), units_per_stage=(1, 1, 1, 1), stem_features=4, norm_groups=2)


def test_dilated_resnet_loads_a_classification_checkpoint_bitwise(tmp_path):
  up = nyuv2_mtl.get_config("ew,runlocal")
  up.data = dict(name=CLASSES)
  up.tasks = [dict(name="scene", kind="multiclass", num_outputs=6)]
  up.model = dict(sharing="hard", trunk=dict(name="resnet", **RESNET))
  up.delta_m = None
  up.num_train_steps = 3
  up.checkpoint_every_steps = 3
  train.train_and_evaluate(up, str(tmp_path / "up"))
  upstream = load_checkpoint_params(str(tmp_path / "up"))

  down = nyuv2_mtl.get_config("ew,deeplab,runlocal")
  down.model.trunk = dict(name="dilated_resnet", **RESNET)
  down.init_from = dict(workdir=str(tmp_path / "up"), load="trunk/.*")
  down.param_groups = [("trunk/.*", None), (".*", 1.0)]  # linear probe of the encoder
  down.num_train_steps = 2
  down.checkpoint_every_steps = 2
  res = train.train_and_evaluate(down, str(tmp_path / "down"))
  after = flat_params(train.final_params(str(tmp_path / "down")))
  trunk = sorted(k for k in after if k.startswith("trunk/"))
  assert trunk == sorted(k for k in upstream if k.startswith("trunk/"))
  for k in trunk:
    np.testing.assert_array_equal(after[k], upstream[k], err_msg=k)
  assert any(k.startswith("heads/") for k in after)
  assert np.isfinite(res["test"]["segmentation"]["miou"])

