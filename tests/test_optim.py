"""Parameter groups: rule matching, frozen parameters, learning-rate multipliers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from conftest import tiny_config
from mtl_jax import optim, train

PARAMS = {"trunk": {"block_0": {"Dense_0": {"kernel": jnp.ones((2, 2)), "bias": jnp.zeros(2)}}},
          "heads": {"binary_1": {"kernel": jnp.ones((1, 2, 1)), "bias": jnp.zeros((1, 1))}}}


def _flat(tree):
  return {"/".join(k): v for k, v in traverse_util.flatten_dict(tree).items()}


def test_first_full_match_wins():
  labels, log = optim.label_params(PARAMS, [("trunk/.*", None), ("heads/.*", 0.1), (".*", 1.0)])
  flat = _flat(labels)
  assert flat["trunk/block_0/Dense_0/kernel"] == "frozen"
  assert flat["heads/binary_1/kernel"] == "lr_x0.1"
  assert len(log) == 4
  # "trunk" alone does not fully match "trunk/block_0/...": full-match semantics, and a
  # freeze rule that so freezes nothing is an error (it used to train the trunk silently).
  with pytest.raises(ValueError, match=r"freeze rules \['trunk'\] match no parameter"):
    optim.label_params(PARAMS, [("trunk", None), (".*", 1.0)])
  labels, _ = optim.label_params(PARAMS, [("trunk", 0.5), (".*", 1.0)])
  assert _flat(labels)["trunk/block_0/Dense_0/kernel"] == "lr_x1"


def test_uncovered_parameters_are_named():
  with pytest.raises(ValueError, match="heads/binary_1/kernel"):
    optim.label_params(PARAMS, [("trunk/.*", 1.0)])


@pytest.mark.parametrize("mult", [0.0, -1.0])
def test_non_positive_multiplier_rejected(mult):
  with pytest.raises(ValueError, match="lr_mult must be > 0"):
    optim.label_params(PARAMS, [(".*", mult)])


def test_lr_multiplier_scales_the_update():
  cfg = {"name": "sgd", "learning_rate": 1.0}
  tx, _, _ = optim.make_optimizer(cfg, [("trunk/.*", 0.1), (".*", 1.0)], PARAMS, 10)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  flat = _flat(updates)
  np.testing.assert_allclose(flat["trunk/block_0/Dense_0/kernel"], -0.1)
  np.testing.assert_allclose(flat["heads/binary_1/kernel"], -1.0)


def test_frozen_trunk_bitwise_unchanged_heads_trained(workdir):
  config = tiny_config(param_groups=[("trunk/.*", None), (".*", 1.0)])
  config.optimizer.name = "adamw"
  config.optimizer.weight_decay = 0.1  # decay must not touch frozen leaves either
  train.train_and_evaluate(config, workdir)
  final = _flat(train.final_params(workdir))
  # The same init, reproduced from the seed.
  from mtl_jax.models import build_model
  from mtl_jax import tasks
  specs = tasks.specs_from_config(config.tasks)
  model = build_model(config.model, tasks.group_tasks(specs))
  init_rng, _ = jax.random.split(jax.random.PRNGKey(config.seed))
  init = _flat(model.init(init_rng, jnp.zeros((1, 40)))["params"])
  for path, value in init.items():
    if path.startswith("trunk/"):
      np.testing.assert_array_equal(final[path], value, err_msg=path)
    else:
      assert not np.array_equal(final[path], value), f"{path} did not train"


def test_frozen_group_gets_no_optimizer_state():
  tx, _, _ = optim.make_optimizer({"name": "adam", "learning_rate": 1e-3},
                                  [("trunk/.*", None), (".*", 1.0)], PARAMS, 10)
  state = tx.init(PARAMS)
  sizes = sum(x.size for x in jax.tree.leaves(state) if hasattr(x, "size"))
  head_size = sum(x.size for x in jax.tree.leaves(PARAMS["heads"]))
  # Adam keeps mu and nu for the head only (+ scalar counts).
  assert head_size * 2 <= sizes < head_size * 2 + 8
  assert isinstance(optax.tree.norm(state), jax.Array)


def test_a_freeze_rule_that_freezes_nothing_is_an_error():
  import jax.numpy as jnp
  params = {"trunk": {"k": jnp.zeros(2)}, "heads": {"k": jnp.zeros(2)}}
  with pytest.raises(ValueError, match=r"freeze rules \['trnk/.\*'\] match no parameter"):
    optim.label_params(params, [("trnk/.*", None), (".*", 1.0)])
  labels, _ = optim.label_params(params, [("trunk/.*", None), (".*", 1.0)])
  assert labels["trunk"]["k"] == optim.FROZEN
