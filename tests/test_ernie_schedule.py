"""ERNIE 2.0's continual multi-task schedule (config.stages with `allocation`): exact
iterations per task and stage, logged, checkpointed, resumed bitwise mid-stage; bad stages."""

import json
import os

import numpy as np
import pytest

from test_mixing import TASKS, _assert_same_params, _error, _train_until, mix_config
from mtl_jax import train
from mtl_jax.data import mixing

NAMES = [t["name"] for t in TASKS]


def test_ernie_stages_equal_stages_and_shares():
  st = mixing.ernie_stages([["digit"], ["parity"], ["digit_ge5"]], 100)
  assert [s["steps"] for s in st] == [34, 33, 33] and sum(s["steps"] for s in st) == 100
  assert all(s["allocation"] == "equal" for s in st)
  np.testing.assert_array_equal(mixing._split_counts(10, np.ones(3)), [4, 3, 3])
  np.testing.assert_array_equal(mixing._split_counts(7, np.array([1.0, 3.0])), [2, 5])


def _stage_config(stages, steps):
  c = mix_config()
  c.num_train_steps = steps
  c.stages = stages
  return c


def test_each_stage_trains_exactly_its_allocation(tmp_path):
  """Stage j's iterations are split exactly among every task present (earlier ones keep a
  share); each iteration is one task's batch with only that task's mask on."""
  from mtl_jax.run import setup
  stages = [dict(steps=12, tasks=["digit"], allocation="equal"),
            dict(steps=12, tasks=["parity"], allocation="equal"),
            dict(steps=15, tasks=["digit_ge5"], allocation={"digit": 3, "parity": 4,
                                                            "digit_ge5": 8})]
  run = setup(_stage_config(stages, 39), str(tmp_path / "w"))
  assert [p.allocation for p in run.phases] == [
      {"digit": 12}, {"digit": 6, "parity": 6}, {"digit": 3, "parity": 4, "digit_ge5": 8}]
  which = []
  for _ in range(39):
    m = run.feed.next_local()["mask"]
    on = [t for t in NAMES if m[t].any()]
    assert len(on) == 1 and m[on[0]].all()  # one task per batch, every example labelled
    which.append(on[0])
  for p in run.phases:
    got = {t: which[p.start:p.end].count(t) for t in p.allocation}
    assert got == p.allocation, (got, p.allocation)
  # Interleaved, not blocks: stage 1 alternates more than once.
  s1 = which[12:24]
  assert sum(a != b for a, b in zip(s1, s1[1:])) > 1
  stats = run.feed.stats()
  assert stats["stage/index"] == 2.0
  assert {t: stats[f"stage/{t}/done"] for t in NAMES} == {"digit": 3, "parity": 4, "digit_ge5": 8}
  assert stats["stage/digit_ge5/iterations"] == 8.0


def test_kill_mid_stage_and_resume_equals_uninterrupted(tmp_path):
  c = _stage_config(mixing.ernie_stages([["digit"], ["parity", "digit_ge5"]], 16), 16)
  c.checkpoint_every_steps = 11
  c.log_every_steps = 4
  full = train.train_and_evaluate(c, str(tmp_path / "full"))
  part = str(tmp_path / "part")
  _train_until(c.copy_and_resolve_references(), part, 11)  # stage 1 started at step 8
  resumed = train.train_and_evaluate(c, part)
  _assert_same_params(train.final_params(str(tmp_path / "full")), train.final_params(part))
  assert resumed == full
  rows = [json.loads(line) for line in open(os.path.join(str(tmp_path / "full"),
                                                         "metrics.jsonl"))]
  logged = {r["step"]: r for r in rows if "stage/index" in r}
  assert logged[4]["stage/index"] == 0 and logged[4]["stage/digit/done"] == 4
  assert logged[16]["stage/index"] == 1
  assert {t: logged[16][f"stage/{t}/iterations"] for t in NAMES} == {
      "digit": 3, "digit_ge5": 3, "parity": 2}  # config.tasks order, remainder to the first
  assert sum(logged[16][f"stage/{t}/done"] for t in NAMES) == 8
  # The data state (in the checkpoint) holds the allocation; another one is refused even
  # where the workdir's config check would not see it.
  from mtl_jax.run import setup
  run = setup(c, str(tmp_path / "fresh"))
  state = run.feed.iterators[0].get_state()
  assert state["allocation"][1] == {"digit": 3, "digit_ge5": 3, "parity": 2}
  state = json.loads(json.dumps(state))
  state["allocation"][1]["parity"] = 3
  with pytest.raises(ValueError, match="trained on the stage allocation"):
    run.feed.iterators[0].set_state(state)


def test_stage_errors(tmp_path):
  c = _stage_config([dict(steps=20, tasks=[])], 20)
  _error(c, tmp_path, "config.stages[0].tasks is empty: the stage names no task")
  c = _stage_config([dict(steps=20, tasks=["digit", "nope"], allocation="equal")], 20)
  _error(c, tmp_path, "names ['nope'], which no dataset labels")
  c = _stage_config([dict(steps=10, tasks=["digit"], allocation="equal"),
                     dict(steps=10, tasks=["parity", "digit_ge5"],
                          allocation={"digit": 5, "nope": 5})], 20)
  _error(c, tmp_path, "allocation names ['nope'], which are not trained by this or an earlier")
  c.stages[1]["allocation"] = {"digit": 5, "parity": 4, "digit_ge5": 2}
  _error(c, tmp_path, "sums to 11 iterations but the stage has steps=10")
  c.stages[1]["allocation"] = {"digit": 5, "parity": 5}
  _error(c, tmp_path, "adds tasks ['digit_ge5'] but allocates them no iterations")
  c.stages[1]["allocation"] = "most"
  _error(c, tmp_path, "must be 'equal' or a dict")
  c.stages[1]["allocation"] = "equal"
  c.stages[1]["replay"] = 0.2
  _error(c, tmp_path, "both `replay` and `allocation`")
  c = _stage_config(mixing.ernie_stages([["digit"], ["parity", "digit_ge5"]], 20), 20)
  c.mixing.batches = "mixed"
  _error(c, tmp_path, "needs config.mixing.batches='per_dataset'")
