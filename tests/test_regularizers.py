"""Regularizers: values against NumPy and wiring into the loss."""

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mtl_jax import regularizers, train

PARAMS = {"trunk": {"block_0": {"Dense_0": {"kernel": jnp.arange(6.0).reshape(2, 3)}}},
          "heads": {"binary_1": {"kernel": jnp.ones((1, 3, 1))}}}


def test_l2_selects_by_full_match():
  assert float(regularizers.l2(PARAMS, "trunk/.*")) == pytest.approx(np.sum(np.arange(6.0) ** 2))
  assert float(regularizers.l2(PARAMS)) == pytest.approx(55.0 + 3.0)
  with pytest.raises(ValueError, match="matches no parameter"):
    regularizers.l2(PARAMS, "trunk")


def test_build_regularizer_weights_and_unknown_name():
  fn = regularizers.build_regularizer([dict(name="l2", weight=0.5, select="heads/.*")])
  assert float(fn(PARAMS)) == pytest.approx(1.5)
  assert regularizers.build_regularizer([]) is None
  with pytest.raises(KeyError, match="unknown regularizer 'l3'"):
    regularizers.build_regularizer([dict(name="l3", weight=1.0)])


def test_regularizer_reaches_the_logged_loss(workdir):
  c = tiny_config(regularizers=[dict(name="l2", weight=1e-3, select="trunk/.*")])
  c.num_train_steps = 5
  c.log_every_steps = 1
  train.train_and_evaluate(c, workdir)
  import json, os
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl")) if "train/loss" in l]
  assert rows[0]["train/regularizer"] > 0
  task_sum = rows[0]["train/digit/loss"] + rows[0]["train/digit_ge5/loss"]
  assert rows[0]["train/loss"] == pytest.approx(task_sum + rows[0]["train/regularizer"], rel=1e-5)
