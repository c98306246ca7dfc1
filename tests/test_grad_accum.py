"""Gradient accumulation: K microbatches give the update of the K x larger batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params, tiny_config
from mtl_jax import train
from mtl_jax.run import build_program

RNG = np.random.default_rng(0)
B = 32
BATCH = {"inputs": jnp.asarray(RNG.normal(size=(B, 40)), jnp.float32),
         "labels": {"digit": jnp.asarray(RNG.integers(0, 10, B)),
                    "digit_ge5": jnp.asarray(RNG.integers(0, 2, B), jnp.float32)},
         # Uneven label counts per microbatch: a plain mean of microbatch means would differ.
         "mask": {"digit": jnp.asarray(RNG.random(B) < 0.3),
                  "digit_ge5": jnp.asarray(RNG.random(B) < 0.8)}}


def _steps(weighting, accum, steps=2):
  c = tiny_config(weighting=weighting, grad_accum_steps=accum)
  c.optimizer = dict(name="sgd", learning_rate=0.1)
  program = build_program(c, BATCH["inputs"][:1])
  step = jax.jit(program.train_step)
  state = program.state
  for _ in range(steps):
    state, metrics = step(state, BATCH)
  return state, metrics


@pytest.mark.parametrize("weighting", [
    None, {"name": "uncertainty"}, {"name": "dwa"}, {"name": "gradnorm"}, {"name": "rlw"},
    {"name": "famo"}, {"aggregator": "upgrad"}, {"aggregator": "pcgrad", "mode": "jacobian"},
    {"aggregator": "mgda", "mode": "representation"}])
def test_accumulated_update_equals_the_large_batch(weighting):
  big, mb = _steps(weighting, 1)
  acc, ma = _steps(weighting, 4)
  np.testing.assert_allclose(ma["task_loss"], mb["task_loss"], rtol=1e-6)
  for k, v in flat_params(big.params).items():
    np.testing.assert_allclose(flat_params(acc.params)[k], v, rtol=1e-5, atol=1e-6, err_msg=k)
  for a, b in zip(jax.tree.leaves(acc.weighting), jax.tree.leaves(big.weighting)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_plain_mean_of_microbatch_means_would_differ():
  """The test above can fail: unweighted microbatch means are not the batch mean here."""
  from mtl_jax import losses
  from mtl_jax.step import split_microbatches
  counts = np.asarray(jax.vmap(lambda l, m: losses.task_loss_counts(
      build_program(tiny_config(), BATCH["inputs"][:1]).specs,
      build_program(tiny_config(), BATCH["inputs"][:1]).groups, l, m))(
          *split_microbatches((BATCH["labels"], BATCH["mask"]), 4)))
  assert len(set(counts[:, 0].tolist())) > 1


def test_accumulation_count_must_divide_the_batch(workdir):
  c = tiny_config(grad_accum_steps=3)
  with pytest.raises(ValueError, match="grad_accum_steps=3: batch_size=32 must split"):
    train.train_and_evaluate(c, workdir)


def test_training_with_accumulation_runs_end_to_end(workdir):
  c = tiny_config(grad_accum_steps=2)
  c.num_train_steps = 4
  res = train.train_and_evaluate(c, workdir)
  assert np.isfinite(res["test"]["digit"]["loss"])
