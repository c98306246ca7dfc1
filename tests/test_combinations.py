"""Combinations the other tests leave out, each checked against a loop oracle.

* every sharing scheme x a loss weighting (uncertainty) and an aggregator
  (UPGrad): two SGD steps of the program's own train step equal the update
  built from one ``jax.grad`` per task (shared parameters, from the scheme's
  ParamLayout, get the aggregated direction; the rest the sum);
* ``num_seeds > 1`` with a non-equal weighting equals separate runs per seed;
* 8 simulated devices with an aggregator and with ``num_seeds`` equal 1 device.
"""

import json
import os
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import child_env, flat_params, tiny_config
from mtl_jax import losses, train
from mtl_jax.models import sharing
from mtl_jax.run import build_program
from mtl_jax.weighting import AGGREGATORS

SCHEMES = ("hard", "pooled", "single_task", "soft", "mmoe", "omoe", "cross_stitch")
LR = 0.1
RNG = np.random.default_rng(0)
N = 16
BATCH = {"inputs": RNG.normal(size=(N, 6)).astype(np.float32),
         "labels": {"a": RNG.integers(0, 2, N), "c": RNG.normal(size=N).astype(np.float32)},
         "mask": {"a": RNG.random(N) > 0.2, "c": RNG.random(N) > 0.2}}


def _config(scheme, weighting):
  c = tiny_config()  # its data is not built: the test feeds BATCH
  tasks = [dict(name="a", kind="binary"), dict(name="c", kind="regression")]
  if scheme == "pooled":  # one output shared by tasks of one kind
    tasks = [dict(name="a", kind="regression"), dict(name="c", kind="regression")]
  c.tasks = tasks
  c.model = dict(sharing=scheme, trunk=dict(name="mlp", features=(8,)))
  if scheme in ("mmoe", "omoe"):
    c.model.num_experts = 2
  c.optimizer = dict(name="sgd", learning_rate=LR, schedule="constant")
  c.weighting = weighting
  return c


def _batch(scheme):
  b = {k: (dict(v) if isinstance(v, dict) else v) for k, v in BATCH.items()}
  if scheme == "pooled":
    b["labels"]["a"] = BATCH["labels"]["a"].astype(np.float32)
  return jax.tree.map(jnp.asarray, b)


def _task_losses(program, params, batch):
  out = program.model.apply({"params": params}, batch["inputs"])
  return losses.task_losses(program.specs, program.groups, out, batch["labels"], batch["mask"])


def _oracle(program, batch):
  """Oracle: one jax.grad per task, a Python loop (fine in a test), and the task losses."""
  return jax.jit(lambda p: ([jax.grad(lambda q, t=t: _task_losses(program, q, batch)[t])(p)
                             for t in range(len(program.specs))],
                            _task_losses(program, p, batch)))


def _sgd(params, grads):
  return {k: params[k] - LR * grads[k] for k in params}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_every_scheme_with_uncertainty_and_upgrad_matches_a_loop(scheme):
  batch = _batch(scheme)
  shared = re.compile(sharing.layout(scheme).shared)
  for weighting in (dict(name="uncertainty", options=dict(lr=0.5, optimizer="sgd")),
                    dict(aggregator="upgrad")):
    program = build_program(_config(scheme, weighting), batch["inputs"][:1])
    step = jax.jit(program.train_step)
    state = program.state
    want = flat_params(state.params)
    s = np.zeros(2, np.float32)  # uncertainty's log-variances
    oracle = _oracle(program, batch)
    for _ in range(2):
      per_task, task_l = oracle(state.params)
      per_task, task_l = [flat_params(g) for g in per_task], np.asarray(task_l)
      if "aggregator" in weighting:
        keys = sorted(k for k in want if shared.fullmatch(k))
        assert keys, f"{scheme}: no parameter matches its layout's shared {shared.pattern!r}"
        jac = np.stack([np.concatenate([g[k].ravel() for k in keys]) for g in per_task])
        d = np.asarray(AGGREGATORS.get("upgrad")()(jnp.asarray(jac), jax.random.PRNGKey(0)))
        grads = {k: sum(g[k] for g in per_task) for k in want}
        sizes = np.cumsum([0] + [want[k].size for k in keys])
        for i, k in enumerate(keys):
          grads[k] = d[sizes[i]:sizes[i + 1]].reshape(want[k].shape)
      else:  # d/dθ Σ exp(-s_t) L_t + s_t, then SGD on s: d/ds_t = 1 - exp(-s_t) L_t
        grads = {k: sum(np.exp(-s[t]) * g[k] for t, g in enumerate(per_task)) for k in want}
      want = _sgd(want, grads)
      state, _ = step(state, batch)
      if "name" in weighting:
        s = s - 0.5 * (1 - np.exp(-s) * task_l)
        np.testing.assert_allclose(state.weighting["log_vars"], s, rtol=1e-5, atol=1e-6)
      got = flat_params(state.params)
      for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=2e-4, atol=2e-6,
                                   err_msg=f"{scheme} {weighting} {k}")
    if "name" in weighting:  # the weights moved, so this was not equal weighting
      assert np.all(np.abs(s) > 1e-3), s


def test_num_seeds_with_a_non_equal_weighting_equals_separate_runs(tmp_path):
  def config(**kw):
    c = tiny_config(**kw)
    c.num_train_steps = 6
    c.checkpoint_every_steps = 0
    c.model.trunk.features = (16,)
    c.weighting = dict(name="uncertainty", options=dict(lr=0.1))
    return c
  res = train.train_and_evaluate(config(num_seeds=2), str(tmp_path / "vmapped"))
  stacked = flat_params(train.final_params(str(tmp_path / "vmapped")))
  for r in range(2):
    single = train.train_and_evaluate(config(seed=r), str(tmp_path / f"seed{r}"))
    for k, v in flat_params(train.final_params(str(tmp_path / f"seed{r}"))).items():
      np.testing.assert_allclose(stacked[k][r], v, rtol=1e-4, atol=1e-5, err_msg=f"{k} replica {r}")
    assert res["replicas"][r]["test"]["digit"]["accuracy"] == pytest.approx(
        single["test"]["digit"]["accuracy"], abs=2e-3)


_CHILD = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, os.environ["REPO"])
    sys.path.insert(0, os.path.join(os.environ["REPO"], "tests"))
    import jax
    assert jax.device_count() == 8, jax.devices()
    from conftest import flat_params, tiny_config
    from mtl_jax import train
    out = {}
    for name, kw in [("agg", dict(weighting=dict(aggregator="upgrad"))),
                     ("seeds", dict(num_seeds=2, weighting=dict(name="uncertainty")))]:
      for devices in (1, 8):
        c = tiny_config(num_devices=devices, **kw)
        c.num_train_steps = 4
        c.batch_size = 64
        c.checkpoint_every_steps = 0
        c.model.trunk.features = (16,)
        wd = os.path.join(sys.argv[1], f"{name}{devices}")
        train.train_and_evaluate(c, wd)
        out[f"{name}{devices}"] = {k: v.tolist()
                                   for k, v in flat_params(train.final_params(wd)).items()}
    json.dump(out, open(os.path.join(sys.argv[1], "params.json"), "w"))
""")


def test_eight_devices_with_an_aggregator_and_with_num_seeds(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = child_env(8, REPO=repo, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-4000:]
  p = json.load(open(tmp_path / "params.json"))
  for name in ("agg", "seeds"):
    one, eight = p[f"{name}1"], p[f"{name}8"]
    assert set(one) == set(eight)
    for k in one:
      np.testing.assert_allclose(np.asarray(eight[k]), np.asarray(one[k]), rtol=1e-5, atol=1e-5,
                                 err_msg=f"{name} {k}")
  assert np.asarray(p["seeds8"]["trunk/block_0/Dense_0/kernel"]).shape[0] == 2
