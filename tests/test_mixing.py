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


def test_evaluation_per_dataset_matches_numpy_oracle(tmp_path):
  """A task labelled by two datasets is reported on each (task@alias) on its own test split."""
  from mtl_jax.models import build_model, outputs_by_task
  c = tiny_config()
  del c["data"]
  c.tasks = TASKS[:2]
  c.datasets = [_mnist("plain", ["digit", "digit_ge5"], n=500),
                _mnist("shuffled", ["digit"], n=200, shuffle_spatial=True)]
  c.num_train_steps = 30
  res = train.train_and_evaluate(c, str(tmp_path / "w"))
  assert list(res["test"]) == ["digit@plain", "digit@shuffled", "digit_ge5"]
  params = train.final_params(str(tmp_path / "w"))
  groups = tasks_lib.group_tasks(tasks_lib.specs_from_config(c.tasks))
  model = build_model(c.model, groups)
  from mtl_jax.data.base import build_dataset
  for alias, kw in (("plain", {}), ("shuffled", dict(shuffle_spatial=True))):
    test = build_dataset(dict(name="mnist1d", **kw)).test
    out = outputs_by_task(groups, model.apply({"params": params}, test.inputs))
    acc = np.mean(np.argmax(np.asarray(out["digit"]), -1) == test.labels["digit"])
    assert res["test"][f"digit@{alias}"]["accuracy"] == pytest.approx(acc, abs=1e-6)
  assert res["test"]["digit@plain"]["accuracy"] != res["test"]["digit@shuffled"]["accuracy"]


def test_num_seeds_each_replica_its_own_order(tmp_path):
  c = mix_config(batches="mixed")
  c.num_seeds = 2
  c.num_train_steps = 6
  res = train.train_and_evaluate(c, str(tmp_path / "w"))
  assert len(res["replicas"]) == 2
  from mtl_jax.run import setup
  c2 = mix_config(batches="mixed")
  c2.num_seeds = 2
  run = setup(c2, str(tmp_path / "fresh"))
  b = run.feed.next_local()
  assert b["inputs"].shape[:2] == (2, c.batch_size)
  assert not np.array_equal(b["inputs"][0], b["inputs"][1])
  for r in range(2):  # replica r reads exactly what a lone run with seed r reads
    c1 = mix_config(batches="mixed")
    c1.seed = r
    lone = setup(c1, str(tmp_path / f"lone{r}")).feed.next_local()
    np.testing.assert_array_equal(lone["inputs"], b["inputs"][r])


def test_task_embedding_appends_one_hot_dataset_id(tmp_path):
  from mtl_jax.run import setup
  c = mix_config(task_embedding=True, batches="mixed", sampling="uniform")
  run = setup(c, str(tmp_path / "w"))
  for i, src in enumerate(run.sources):
    x = src.splits["test"].inputs
    assert x.shape[1] == 40 + 3
    np.testing.assert_array_equal(x[:, 40:], np.eye(3, dtype=x.dtype)[np.full(len(x), i)])
  b = run.feed.next_local()
  onehot = b["inputs"][:, 40:]
  for i, src in enumerate(run.sources):  # rows from dataset i carry id i and only its task
    rows = onehot[:, i] == 1
    assert rows.any()
    for t in TASKS:
      if t["name"] not in src.tasks:
        assert not b["mask"][t["name"]][rows].any()


def test_stage_masks_and_replay_share(tmp_path):
  """Future tasks never appear; replay gets its share of batches; old tasks off without replay."""
  from mtl_jax.run import setup
  c = mix_config()
  c.num_train_steps = 400
  c.stages = [dict(steps=100, tasks=["digit"]),
              dict(steps=200, tasks=["parity"], replay=0.25),
              dict(steps=100, datasets=["mid"])]
  run = setup(c, str(tmp_path / "w"))
  masks = [run.feed.next_local()["mask"] for _ in range(400)]
  labelled = np.array([[m[t["name"]].any() for t in TASKS] for m in masks])
  assert labelled[:100, 0].all() and not labelled[:100, 1:].any()
  s1 = labelled[100:300]
  assert not s1[:, 1].any() and (s1[:, 0] ^ s1[:, 2]).all()
  share = s1[:, 0].mean()
  assert abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 200), share
  assert labelled[300:, 1].all() and not labelled[300:, [0, 2]].any()


def _error(config, tmp_path, *fragments, exc=ValueError):
  with pytest.raises(exc) as e:
    train.train_and_evaluate(config, str(tmp_path / "err"))
  for f in fragments:
    assert f in str(e.value), str(e.value)


def test_error_labels_do_not_fit_kind(tmp_path):
  c = mix_config()
  c.datasets[1] = _mnist("small", {"parity": "digit"}, n=100)  # 10 classes into a binary task
  _error(c, tmp_path, "dataset 'small'", "'parity'", exc=tasks_lib.LabelError)


def test_error_negative_and_all_zero_weights(tmp_path):
  c = mix_config(sampling="weights")
  for d, w in zip(c.datasets, (1.0, -0.5, 2.0)):
    d["weight"] = w
  _error(c, tmp_path, "('small', -0.5)", ">= 0")
  c = mix_config(sampling="weights")
  for d in c.datasets:
    d["weight"] = 0.0
  _error(c, tmp_path, "every weight", "zero")
  c = mix_config()
  c.datasets[0]["weight"] = 2.0
  _error(c, tmp_path, "dataset 'big' has weight=2.0", "sampling='weights'")


def test_error_task_no_dataset_labels(tmp_path):
  c = mix_config()
  c.datasets = c.datasets[:2]
  _error(c, tmp_path, "['digit_ge5'] are labelled by no dataset")
  c = mix_config()
  c.stages = [dict(steps=10, tasks=["digit", "parity", "digit_ge5"]),
              dict(steps=10, tasks=["colour"])]
  _error(c, tmp_path, "['colour']", "no dataset labels")
  c = mix_config()
  c.datasets[0] = _mnist("big", ["digit", "shape"])
  _error(c, tmp_path, "dataset 'big' lists tasks ['shape']")


def test_error_input_structures_differ(tmp_path):
  c = mix_config()
  c.tasks = TASKS[:1] + [dict(name="y1", kind="regression")]
  c.datasets = [_mnist("digits", ["digit"], n=100),
                dict(name="mmoe_synthetic", alias="sines", tasks=["y1"], num_train=50,
                     num_validation=20, num_test=20)]
  _error(c, tmp_path, "'digits' and 'sines'", "(40,) float32", "(100,) float32")


def test_error_mixing_without_datasets(tmp_path):
  c = tiny_config()
  c.mixing = dict(sampling="uniform")
  _error(c, tmp_path, "config.mixing is set but there is one dataset")
  c = mix_config(sampling="temprature")
  _error(c, tmp_path, "'temprature'", "valid: ['proportional'")
  c = mix_config(temperature=0.0, sampling="temperature")
  _error(c, tmp_path, "temperature must be > 0")


def test_error_stage_steps_and_replay(tmp_path):
  c = mix_config()
  c.stages = [dict(steps=5, tasks=["digit", "parity", "digit_ge5"])]
  _error(c, tmp_path, "num_train_steps=20")
  c.stages = [dict(steps=20, tasks=["digit", "parity", "digit_ge5"], replay=0.5)]
  _error(c, tmp_path, "nothing to replay")
  c.stages = [dict(steps=10, tasks=["digit"]), dict(steps=10, tasks=["parity"])]
  _error(c, tmp_path, "['digit_ge5'] are in no stage")


def test_one_dataset_logs_examples_and_epochs(tmp_path):
  c = tiny_config()
  c.num_train_steps = 10
  res = train.train_and_evaluate(c, str(tmp_path / "w"))
  assert set(res) == {"validation", "test"} and set(res["test"]) == {"digit", "digit_ge5"}
  rows = [json.loads(l) for l in open(tmp_path / "w" / "metrics.jsonl")]
  last = [r for r in rows if "data/mnist1d/examples" in r][-1]
  assert last["step"] == 10 and last["data/mnist1d/examples"] == 10 * 32
  assert last["data/mnist1d/epochs"] == pytest.approx(320 / 3500)


@pytest.mark.parametrize("arg", ["", "stages"])
def test_task_mixing_config_builds(tmp_path, arg):
  from configs import task_mixing
  from mtl_jax.run import setup
  run = setup(task_mixing.get_config(arg), str(tmp_path / "w"))
  sizes = {s.alias: len(s.splits["train"]) for s in run.sources}
  assert sizes == {"big": 10000, "mid": 1000, "small": 100}
  if arg:
    assert [(p.start, p.end) for p in run.phases] == [(0, 300), (300, 600), (600, 1000)]
    np.testing.assert_allclose(run.phases[2].probs, [0.7, 0.15, 0.15])
  else:
    w = np.sqrt([10000, 1000, 100])
    np.testing.assert_allclose(run.phases[0].probs, w / w.sum())


@pytest.mark.parametrize("stacked", [False, True])
def test_prefetching_feed_hands_out_the_same_batches_and_state(tmp_path, stacked):
  from mtl_jax.run import setup
  c = mix_config(batches="mixed", sampling="uniform")
  c.num_seeds = 2 if stacked else 1
  plain = setup(c, str(tmp_path / "a"))
  c.prefetch_batches = 3
  pre = setup(c, str(tmp_path / "b"))
  state0 = pre.feed.get_state()
  for k in range(7):
    a, b = plain.feed.next(plain.mesh), pre.feed.next(pre.mesh)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # State and stats are those of the batches handed out, not of those prepared ahead.
    assert pre.feed.get_state() == plain.feed.get_state()
    assert pre.feed.stats() == plain.feed.stats()
  assert state0["replicas"][0]["next_index"] == 0 if stacked else state0["next_index"] == 0
  pre.feed.close()


def test_prefetching_train_equals_plain(tmp_path):
  c = mix_config(batches="per_dataset")
  c.num_train_steps = 8
  c.checkpoint_every_steps = 4
  c.prefetch_batches = 2
  a = train.train_and_evaluate(c, str(tmp_path / "pre"))
  c.prefetch_batches = 0
  b = train.train_and_evaluate(c, str(tmp_path / "plain"))
  assert a == b
  _assert_same_params(train.final_params(str(tmp_path / "pre")),
                      train.final_params(str(tmp_path / "plain")))
