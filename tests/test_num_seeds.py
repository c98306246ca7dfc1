"""num_seeds: N replicas in one vmapped program equal N separate runs."""

import jax
import numpy as np
import pytest

from conftest import flat_params, tiny_config
from mtl_jax import train


_flat = flat_params


def test_replicas_equal_separate_runs(tmp_path):
  c = tiny_config(num_seeds=3)
  c.num_train_steps = 12
  res = train.train_and_evaluate(c, str(tmp_path / "vmapped"))
  stacked = _flat(train.final_params(str(tmp_path / "vmapped")))
  assert stacked["trunk/block_0/Dense_0/kernel"].shape[0] == 3
  accs = []
  for r in range(3):
    single = tiny_config(seed=r)
    single.num_train_steps = 12
    res_r = train.train_and_evaluate(single, str(tmp_path / f"seed{r}"))
    accs.append(res_r["test"]["digit"]["accuracy"])
    for k, v in _flat(train.final_params(str(tmp_path / f"seed{r}"))).items():
      # vmap batches the matmuls, so float32 round-off differs slightly from a lone run.
      np.testing.assert_allclose(stacked[k][r], v, rtol=1e-4, atol=1e-5, err_msg=f"{k} replica {r}")
    assert res["replicas"][r]["seed"] == r
    assert res["replicas"][r]["test"]["digit"]["accuracy"] == pytest.approx(accs[-1], abs=2e-3)
  assert res["test"]["digit"]["accuracy"] == pytest.approx(np.mean(accs), abs=2e-3)
  se = np.std(accs, ddof=1) / np.sqrt(3)
  assert res["test"]["digit"]["accuracy_se"] == pytest.approx(se, abs=2e-3)


def test_replicas_resume_exactly(tmp_path):
  c = tiny_config(num_seeds=2)
  c.optimizer.schedule = "constant"
  c.num_train_steps = 10
  c.checkpoint_every_steps = 5
  train.train_and_evaluate(c, str(tmp_path / "full"))
  c.num_train_steps = 5
  train.train_and_evaluate(c, str(tmp_path / "part"))
  c.num_train_steps = 10
  train.train_and_evaluate(c, str(tmp_path / "part"))
  for a, b in zip(jax.tree.leaves(train.final_params(str(tmp_path / "full"))),
                  jax.tree.leaves(train.final_params(str(tmp_path / "part")))):
    np.testing.assert_array_equal(a, b)
