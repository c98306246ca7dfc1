"""End to end: the per-pixel kinds on dense_shapes through train_and_evaluate (slow file).

A test-only trunk (one 3x3 convolution keeping H, W) stands in for the
encoder-decoder models, so this file checks the loop, not a model: stacked
per-pixel heads, the train step (equal weights and a Gramian-path
aggregator), streamed evaluation of padded batches, and Δm% in results.json
against a baseline file (config.delta_m) with two vmapped seeds, which must
equal ``metrics.delta_m`` on the numbers of the two results files.
"""

import json
import os

import flax.linen as nn
import ml_collections
import numpy as np
import pytest

from mtl_jax import config_validation, metrics, train
from mtl_jax.models.trunks import TRUNKS

TRUNK = "_pixel_conv_test"
if TRUNK not in TRUNKS:
  @TRUNKS.register(TRUNK)
  class _PixelConv(nn.Module):  # pylint: disable=unused-variable
    features: int = 8

    @nn.compact
    def __call__(self, x, train: bool = False):
      del train
      return nn.relu(nn.Conv(self.features, (3, 3), name="block_0")(x))


def _config(**over):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="dense_shapes", size=8, num_train=24, num_validation=10, num_test=6,
                missing_rate=0.1)
  c.tasks = [dict(name="segmentation", kind="segmentation", num_outputs=6),
             dict(name="depth", kind="depth"),
             dict(name="normal", kind="normals", num_outputs=3)]
  c.model = dict(sharing="hard", trunk=dict(name=TRUNK))
  c.optimizer = dict(name="adam", learning_rate=1e-2)
  c.batch_size = 8
  c.eval_batch_size = 4  # 10 and 6 examples: padded last batches
  c.num_train_steps = 3
  c.log_every_steps = 3
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  for k, v in over.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("base"))
  res = train.train_and_evaluate(_config(num_train_steps=30), wd)  # no metric at 0
  return os.path.join(wd, "results.json"), res


def test_trains_and_evaluates_every_metric(baseline):
  _, res = baseline
  for split, n in (("validation", 10), ("test", 6)):
    for task in ("segmentation", "depth", "normal"):
      r = res[split][task]
      assert r["count"] == n and all(np.isfinite(v) for v in r.values()), (split, task, r)
  assert 0 <= res["test"]["normal"]["within_30"] <= 1 and "delta_m" not in res


def test_delta_m_in_results_json_with_an_aggregator(baseline, tmp_path):
  path, base = baseline
  wd = str(tmp_path / "run")
  cfg = _config(weighting=dict(aggregator="upgrad"), num_train_steps=4, num_seeds=2,
                delta_m=dict(baseline=path))
  res = train.train_and_evaluate(cfg, wd)
  with open(os.path.join(wd, "results.json")) as f:
    assert json.load(f)["delta_m"] == res["delta_m"]
  chosen = {"segmentation": ["miou", "pixel_accuracy"], "depth": ["abs_err", "rel_err"],
            "normal": ["mean_angle", "median_angle", "within_11_25", "within_22_5",
                       "within_30"]}
  for split in ("validation", "test"):
    want = metrics.delta_m(res[split], base[split], chosen)
    assert res["delta_m"][split] == pytest.approx(want) and np.isfinite(want)
  assert res["delta_m"]["test"] != 0.0  # another run: not the baseline itself
  # per replica too; Δm% is linear in the values, so the mean's is the replicas' mean
  reps = [r["delta_m"]["test"] for r in res["replicas"]]
  assert len(reps) == 2 and reps[0] != reps[1]
  assert res["delta_m"]["test"] == pytest.approx(np.mean(reps))


def test_delta_m_config_errors(baseline, tmp_path):
  path, _ = baseline
  with pytest.raises(config_validation.ConfigError, match="delta_m.average"):
    config_validation.validate_config(_config(delta_m=dict(baseline=path, average="mean")))
  with pytest.raises(config_validation.ConfigError, match=r"config.delta_m ="):
    config_validation.validate_config(_config(delta_m=dict(path=path)))
  with pytest.raises(FileNotFoundError, match="no results file"):
    train.train_and_evaluate(_config(delta_m=dict(baseline=str(tmp_path / "x.json"))),
                             str(tmp_path / "a"))
  with pytest.raises(ValueError, match=r"lacks \['depth/abs_err'"):
    train.train_and_evaluate(_config(delta_m=dict(baseline={"segmentation": {"miou": 0.3}},
                                                  metrics={"depth": ["abs_err"]})),
                             str(tmp_path / "b"))
  with pytest.raises(ValueError, match="unknown task 'seg'"):
    train.train_and_evaluate(_config(delta_m=dict(baseline=path, metrics={"seg": ["miou"]})),
                             str(tmp_path / "c"))
