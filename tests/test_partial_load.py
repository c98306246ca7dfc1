"""init_from: loaded leaves equal the checkpoint's, others are fresh, mismatches are named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params, tiny_config, train_upstream
from mtl_jax import partial_load, tasks, train
from mtl_jax.models import build_model


_flat = flat_params


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
  return train_upstream(str(tmp_path_factory.mktemp("upstream")), steps=10)


def _downstream(upstream, **init_from):
  c = tiny_config()
  c.tasks = [dict(name="parity", kind="binary")]
  c.model.trunk.features = (32, 32, 32)
  c.model.trunk.num_blocks = 2          # truncation: keep the lower two blocks
  c.num_train_steps = 3
  c.init_from = dict(workdir=upstream, **init_from)
  c.param_groups = [("trunk/.*", None), (".*", 1.0)]
  return c


def test_merge_loads_selected_and_keeps_fresh_rest(upstream):
  loaded = partial_load.load_checkpoint_params(upstream)
  c = _downstream(upstream)
  specs = tasks.specs_from_config(c.tasks)
  model = build_model(c.model, tasks.group_tasks(specs))
  fresh = model.init(jax.random.PRNGKey(5), jnp.zeros((1, 40)))["params"]
  merged, report = partial_load.merge_params(fresh, loaded, load="trunk/.*")
  flat_m, flat_f = _flat(merged), _flat(fresh)
  for path in report["loaded"]:
    np.testing.assert_array_equal(flat_m[path], loaded[path])
  for path in report["fresh"]:
    np.testing.assert_array_equal(flat_m[path], flat_f[path])
  assert sorted(report["loaded"]) == [f"trunk/block_{i}/Dense_0/{w}" for i in (0, 1)
                                      for w in ("bias", "kernel")]
  assert report["fresh"] == ["heads/binary_1/bias", "heads/binary_1/kernel"] or \
      sorted(report["fresh"]) == ["heads/binary_1/bias", "heads/binary_1/kernel"]
  assert "trunk/block_2/Dense_0/kernel" in report["unused"]
  assert "heads/multiclass_10/kernel" in report["unused"]


def test_init_from_in_training_with_frozen_trunk(upstream, tmp_path, capsys):
  workdir = str(tmp_path / "down")
  train.train_and_evaluate(_downstream(upstream, load="trunk/.*"), workdir)
  assert "init_from" in capsys.readouterr().out
  final = _flat(train.final_params(workdir))
  loaded = partial_load.load_checkpoint_params(upstream)
  np.testing.assert_array_equal(final["trunk/block_1/Dense_0/kernel"],
                                loaded["trunk/block_1/Dense_0/kernel"])


def test_init_from_with_replicas_gives_every_seed_the_pretrained_trunk(upstream, tmp_path):
  c = _downstream(upstream, load="trunk/.*")
  c.num_seeds = 2
  workdir = str(tmp_path / "seeds")
  train.train_and_evaluate(c, workdir)
  final = _flat(train.final_params(workdir))
  loaded = partial_load.load_checkpoint_params(upstream)
  for r in range(2):  # frozen trunk: each replica holds exactly the upstream's
    np.testing.assert_array_equal(final["trunk/block_1/Dense_0/kernel"][r],
                                  loaded["trunk/block_1/Dense_0/kernel"])
  heads = final["heads/binary_1/kernel"]
  assert not np.array_equal(heads[0], heads[1])  # fresh heads: own init per seed


def test_shape_mismatch_names_paths_and_shapes(upstream, tmp_path):
  c = _downstream(upstream, load=".*")  # heads differ: multiclass_10 vs binary_1
  with pytest.raises(partial_load.CheckpointMismatchError,
                     match=r"heads/binary_1/kernel: model \(1, 32, 1\), checkpoint <absent>"):
    train.train_and_evaluate(c, str(tmp_path / "a"))
  c = _downstream(upstream, load="trunk/.*")
  c.model.trunk.features = (16, 32, 32)
  with pytest.raises(partial_load.CheckpointMismatchError,
                     match=r"trunk/block_0/Dense_0/kernel: model \(40, 16\), checkpoint \(40, 32\)"):
    train.train_and_evaluate(c, str(tmp_path / "b"))


def test_missing_checkpoint_dir(tmp_path):
  with pytest.raises(FileNotFoundError, match="no checkpoints"):
    partial_load.load_checkpoint_params(str(tmp_path))


def test_load_or_skip_that_selects_nothing_is_an_error():
  import jax.numpy as jnp
  fresh = {"trunk": {"k": jnp.zeros(2)}, "heads": {"k": jnp.zeros(2)}}
  loaded = {"trunk/k": np.ones(2), "heads/k": np.ones(2)}
  with pytest.raises(ValueError, match=r"init_from.load 'trnk/.\*' matches no parameter; paths look like \['trunk/k'"):
    partial_load.merge_params(fresh, loaded, load="trnk/.*")
  with pytest.raises(ValueError, match=r"init_from.skip 'head/.\*' matches no parameter"):
    partial_load.merge_params(fresh, loaded, load=".*", skip="head/.*")


def test_path_mask_marks_the_selected_leaves():
  import jax.numpy as jnp
  mask = partial_load.path_mask({"a": {"b": jnp.zeros(1), "c": jnp.zeros(1)}}, ["a/c"])
  assert mask == {"a": {"b": False, "c": True}}
