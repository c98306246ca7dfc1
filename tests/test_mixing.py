"""Datasets per task, mixing, stages: sampler values, resume, evaluation per dataset, bad input."""

import json
import os

import jax
import numpy as np
import pytest

from conftest import tiny_config
from mtl_jax import tasks as tasks_lib
from mtl_jax import train
from mtl_jax.data import mixing
from mtl_jax.data.base import ArrayDataset

TASKS = [dict(name="digit", kind="multiclass", num_outputs=10),
         dict(name="digit_ge5", kind="binary"), dict(name="parity", kind="binary")]


def _mnist(alias, tasks, n=None, **kw):
  d = dict(name="mnist1d", alias=alias, tasks=tasks, **kw)
  if n is not None:
    d["train_per_class"] = n // 10
  return d


def mix_config(**mixing_opts):
  c = tiny_config()
  c.tasks = TASKS
  del c["data"]
  c.datasets = [_mnist("big", ["digit"]), _mnist("small", ["parity"], n=100),
                _mnist("mid", ["digit_ge5"], n=500)]
  c.mixing = dict(mixing_opts)
  c.optimizer.schedule = "constant"
  return c


def _src(alias, n, tasks, weight=None, x=None, task_names=("a", "b")):
  x = np.zeros((n, 3), np.float32) if x is None else x
  labels = {t: np.zeros(n, np.int32) for t in task_names}
  mask = {t: np.full(n, t in tasks) for t in task_names}
  return mixing.Source(alias, alias, tuple(tasks), weight,
                       {"train": ArrayDataset(x, labels, mask)})


def _specs():
  return tasks_lib.specs_from_config([dict(name="a", kind="binary"), dict(name="b", kind="binary")])


@pytest.mark.parametrize("sampling,expected", [
    ("proportional", [100 / 1100, 1000 / 1100]),
    ("temperature", [10 / (10 + 1000 ** 0.5), 1000 ** 0.5 / (10 + 1000 ** 0.5)]),
    ("uniform", [0.5, 0.5]),
    ("weights", [0.25, 0.75])])
def test_mixture_weights_closed_form(sampling, expected):
  srcs = [_src("s", 100, ["a"], 1.0), _src("l", 1000, ["b"], 3.0)]
  opts = dict(mixing.MIXING_DEFAULTS, sampling=sampling)
  np.testing.assert_allclose(mixing.mixture_weights(srcs, opts), expected, rtol=1e-12)


@pytest.mark.parametrize("mixed", [False, True])
def test_sampler_frequencies_epochs_and_masks(mixed):
  """Empirical dataset shares match p; every dataset sees each example once per epoch."""
  srcs = [_src("s", 50, ["a"], x=np.arange(50, dtype=np.float32)[:, None]),
          _src("l", 200, ["b"], x=1000 + np.arange(200, dtype=np.float32)[:, None])]
  phases = [mixing.Phase(0, 10 ** 6, [(0, np.array([True, False])), (1, np.array([False, True]))],
                         np.array([0.3, 0.7]))]
  it = mixing.MixtureIterator(srcs, phases, 10, seed=3, mixed=mixed)
  from_small = 0
  seen_small, seen_large = [], []
  for _ in range(2000):
    b = next(it)
    x = b["inputs"][:, 0]
    small = x < 1000
    np.testing.assert_array_equal(b["mask"]["a"], small)
    np.testing.assert_array_equal(b["mask"]["b"], ~small)
    if not mixed:
      assert small.all() or not small.any()
    from_small += small.sum()
    seen_small += list(x[small]); seen_large += list(x[~small])
  share = from_small / 20000
  assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / (2000 if not mixed else 20000)), share
  st = it.stats()
  assert st["data/s/examples"] == from_small and st["data/l/examples"] == 20000 - from_small
  assert st["data/s/epochs"] == from_small / 50
  # Without replacement within an epoch: the first 50 small examples are a permutation.
  assert sorted(seen_small[:50]) == list(range(50))
  assert sorted(seen_large[:200]) == list(1000 + np.arange(200))


def test_sampler_state_roundtrip_is_exact():
  srcs = [_src("s", 7, ["a"]), _src("l", 30, ["b"])]
  srcs[0].splits["train"].inputs[:] = np.arange(7)[:, None]
  srcs[1].splits["train"].inputs[:] = 100 + np.arange(30)[:, None]
  phases = [mixing.Phase(0, 5, [(0, np.array([True, False]))], np.array([1.0])),
            mixing.Phase(5, 100, [(0, np.array([True, False])), (1, np.array([False, True]))],
                         np.array([0.5, 0.5]))]
  a = mixing.MixtureIterator(srcs, phases, 4, seed=0, mixed=True)
  ref = [next(a)["inputs"] for _ in range(20)]
  b = mixing.MixtureIterator(srcs, phases, 4, seed=0, mixed=True)
  for _ in range(8):
    next(b)
  c = mixing.MixtureIterator(srcs, phases, 4, seed=0, mixed=True)
  c.set_state(json.loads(json.dumps(b.get_state())))
  for k in range(8, 20):
    np.testing.assert_array_equal(next(c)["inputs"], ref[k])
  assert all((r < 100).all() for r in ref[:5])  # stage 0: only dataset s


def _assert_same_params(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("batches,stages", [("mixed", False), ("per_dataset", True)])
def test_resume_bitwise(tmp_path, batches, stages):
  """N steps == N/2 + resume + N/2 (across a stage boundary with stages)."""
  c = mix_config(batches=batches, sampling="temperature")
  c.num_train_steps = 16
  c.checkpoint_every_steps = 8
  if stages:
    c.stages = [dict(steps=10, tasks=["digit"]), dict(steps=6, tasks=["parity", "digit_ge5"],
                                                      replay=0.3)]
  full = train.train_and_evaluate(c, str(tmp_path / "full"))
  part_dir = str(tmp_path / "part")
  c16 = c.copy_and_resolve_references()
  _train_until(c16, part_dir, 8)
  resumed = train.train_and_evaluate(c16, part_dir)
  _assert_same_params(train.final_params(str(tmp_path / "full")), train.final_params(part_dir))
  assert resumed == full
  rows = [json.loads(l) for l in open(os.path.join(part_dir, "metrics.jsonl"))]
  last = [r for r in rows if "data/big/examples" in r][-1]
  assert last["step"] == 16
  total = sum(last[f"data/{a}/examples"] for a in ("big", "small", "mid"))
  assert total == 16 * c.batch_size
  assert last["data/small/epochs"] == last["data/small/examples"] / 100


def _train_until(config, workdir, stop):
  """Trains ``config`` and stops (like a preemption) right after the checkpoint at ``stop``."""
  from mtl_jax.run import setup
  run = setup(config, workdir)
  state = run.program.state
  for _ in range(stop):
    state, _ = run.train_step(state, run.feed.next(run.mesh))
  run.checkpointer.save(stop, state, run.feed.get_state(), force=True)
  run.checkpointer.wait()
  run.checkpointer.close()
