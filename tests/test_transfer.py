"""Transfer strategies: what is loaded, what is frozen, and cached == linear probe."""

import jax
import numpy as np
import pytest

from conftest import flat_params, tiny_config, train_upstream
from mtl_jax import partial_load, train, transfer


_flat = flat_params


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
  return train_upstream(str(tmp_path_factory.mktemp("upstream")), steps=20)


def _downstream(upstream, strategy, **opts):
  c = tiny_config()
  c.tasks = [dict(name="parity", kind="binary")]
  c.model.trunk.features = (32, 32, 32)
  c.num_train_steps = 15
  c.checkpoint_every_steps = 0
  c.transfer = dict(strategy=strategy, upstream=upstream, **opts)
  return c


def test_freeze_bottom_leaves_exactly_lower_blocks_unchanged(upstream, tmp_path):
  train.train_and_evaluate(_downstream(upstream, "freeze_bottom:2", trunk_lr_mult=0.5),
                           str(tmp_path / "fb"))
  up = partial_load.load_checkpoint_params(upstream)
  down = _flat(train.final_params(str(tmp_path / "fb")))
  for i in range(3):
    for w in ("kernel", "bias"):
      path = f"trunk/block_{i}/Dense_0/{w}"
      if i < 2:
        np.testing.assert_array_equal(down[path], up[path], err_msg=path)
      else:
        assert not np.array_equal(down[path], up[path]), f"{path} did not train"


def test_truncate_keeps_lower_blocks_frozen(upstream, tmp_path):
  train.train_and_evaluate(_downstream(upstream, "truncate:1"), str(tmp_path / "tr"))
  down = _flat(train.final_params(str(tmp_path / "tr")))
  assert sorted(k for k in down if k.startswith("trunk")) == [
      "trunk/block_0/Dense_0/bias", "trunk/block_0/Dense_0/kernel"]
  up = partial_load.load_checkpoint_params(upstream)
  np.testing.assert_array_equal(down["trunk/block_0/Dense_0/kernel"],
                                up["trunk/block_0/Dense_0/kernel"])


def test_cached_probe_reaches_the_linear_probe_head(upstream, tmp_path):
  """Same init (flax derives head RNGs from the module path), same data order:
  the heads agree to float32 round-off (tolerance 1e-4 relative)."""
  res_lp = train.train_and_evaluate(_downstream(upstream, "linear_probe"), str(tmp_path / "lp"))
  res_cp = train.train_and_evaluate(_downstream(upstream, "cached_probe"), str(tmp_path / "cp"))
  lp = _flat(train.final_params(str(tmp_path / "lp")))
  cp = _flat(train.final_params(str(tmp_path / "cp")))
  assert set(cp) == {"heads/binary_1/kernel", "heads/binary_1/bias"}
  for k in cp:
    np.testing.assert_allclose(cp[k], lp[k], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(res_cp["test"]["parity"]["loss"], res_lp["test"]["parity"]["loss"],
                             rtol=1e-4)


def test_finetune_layer_decay_groups():
  c = _downstream("/up", "finetune", trunk_lr_mult=0.1, layer_decay=0.5)
  p = transfer.plan(c)
  assert p.config.init_from.load == "trunk/.*"
  groups = [tuple(r) for r in p.config.param_groups]
  # Body parameters outside the blocks (none in an MLP trunk) train at trunk_lr_mult.
  assert groups == [("trunk/block_0/.*", pytest.approx(0.025)), ("trunk/block_1/.*", pytest.approx(0.05)),
                    ("trunk/block_2/.*", pytest.approx(0.1)), ("trunk/.*", pytest.approx(0.1)),
                    (".*", 1.0)]
  assert "transfer" not in p.config


def _moe_downstream(sharing, strategy):
  c = _downstream("/up", strategy)
  c.model = dict(sharing=sharing, trunk=dict(name="mlp", features=(8, 8, 8)), num_experts=2) \
      if sharing in ("mmoe", "omoe") else dict(sharing=sharing, trunk=dict(name="mlp", features=(8, 8, 8)))
  return c


@pytest.mark.parametrize("sharing,body,blocks", [
    ("mmoe", "experts/.*", "experts"), ("omoe", "experts/.*|gate", "experts"), ("soft", "columns/.*", "columns"),
    ("cross_stitch", "columns/.*", "columns"), ("single_task", "columns/.*", "columns")])
def test_strategies_act_on_the_schemes_declared_body(sharing, body, blocks):
  """Each scheme's ParamLayout, not a hard-coded trunk/, decides what is loaded and frozen."""
  from mtl_jax import optim
  from mtl_jax.models import build_model
  from mtl_jax.tasks import group_tasks, specs_from_config
  p = transfer.plan(_moe_downstream(sharing, "linear_probe"))
  assert p.config.init_from.load == body
  assert [tuple(r) for r in p.config.param_groups] == [(body, None), (".*", 1.0)]
  fb = transfer.plan(_moe_downstream(sharing, "freeze_bottom:2"))
  c = fb.config
  groups = group_tasks(specs_from_config(c.tasks))
  params = build_model(c.model, groups).init(jax.random.PRNGKey(0), np.zeros((1, 40)))["params"]
  labels, _ = optim.label_params(params, [tuple(r) for r in c.param_groups])
  flat = flat_params(labels)
  for path, group in flat.items():
    frozen = path.startswith((f"{blocks}/block_0/", f"{blocks}/block_1/"))
    assert (group == optim.FROZEN) == frozen, (path, group)
  assert any(g == optim.FROZEN for g in flat.values())


@pytest.mark.parametrize("sharing", ["mmoe", "soft", "cross_stitch"])
def test_cached_probe_needs_one_shared_trunk(sharing):
  with pytest.raises(ValueError, match=f"cached_probe.*sharing {sharing!r}"):
    transfer.plan(_moe_downstream(sharing, "cached_probe"))


def test_scratch_loads_nothing():
  p = transfer.plan(_downstream("/up", "scratch"))
  assert not p.config.get("init_from") and p.cache_trunk is None


@pytest.mark.parametrize("strategy,err,match", [
    ("probe", KeyError, "unknown transfer strategy 'probe'"),
    ("freeze_bottom", ValueError, "needs a block count"),
    ("truncate:9", ValueError, r"truncate:9 needs 1 <= K <= 3"),
])
def test_bad_strategies(strategy, err, match):
  with pytest.raises(err, match=match):
    transfer.plan(_downstream("/up", strategy))


def test_linear_probe_on_mmoe_loads_and_freezes_the_experts(tmp_path):
  """The experts transfer; MMoE's gates are per task (another task set here), so they train."""
  up = tiny_config(model=dict(sharing="mmoe", trunk=dict(name="mlp", features=(8, 8)),
                              num_experts=2))
  up.num_train_steps = 6
  up.checkpoint_every_steps = 0
  train.train_and_evaluate(up, str(tmp_path / "up"))
  down = tiny_config(model=dict(up.model))
  down.tasks = [dict(name="parity", kind="binary")]
  down.num_train_steps = 4
  down.checkpoint_every_steps = 0
  down.transfer = dict(strategy="linear_probe", upstream=str(tmp_path / "up"))
  train.train_and_evaluate(down, str(tmp_path / "down"))
  before, after = _flat(train.final_params(str(tmp_path / "up"))), _flat(
      train.final_params(str(tmp_path / "down")))
  body = [k for k in after if k.startswith("experts/")]
  assert body and all(np.array_equal(before[k], after[k]) for k in body)
  assert after["gate"].shape[0] == 1 and before["gate"].shape[0] == 2
  assert "heads/binary_1/kernel" in after
