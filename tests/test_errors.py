"""Bad input fails loudly and names the culprit."""

import json
import os

import numpy as np
import pytest

from conftest import tiny_config
from mtl_jax import tasks, train
from mtl_jax.checkpoint import IncompatibleWorkdirError
from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits
from mtl_jax.tasks import LabelError, TaskSpec


def test_unknown_config_key_lists_valid_keys(workdir):
  c = tiny_config()
  c.num_train_step = 5  # typo
  with pytest.raises(ValueError, match=r"unknown config keys \['num_train_step'\].*num_train_steps"):
    train.train_and_evaluate(c, workdir)


@pytest.mark.parametrize("section,key,value,match", [
    ("data", "name", "mnist2d", r"unknown dataset 'mnist2d'; valid names: \[.*'mnist1d'"),
    ("model", "sharing", "telepathy", r"unknown sharing scheme 'telepathy'; valid names: \[.*'hard'"),
    ("optimizer", "name", "adagrad9", r"unknown optimizer 'adagrad9'"),
])
def test_unknown_registry_names_list_valid_ones(workdir, section, key, value, match):
  c = tiny_config()
  c[section][key] = value
  with pytest.raises(KeyError, match=match):
    train.train_and_evaluate(c, workdir)


def test_unknown_trunk_and_trunk_option(workdir):
  c = tiny_config()
  c.model.trunk.name = "transformerr"
  with pytest.raises(KeyError, match=r"unknown trunk 'transformerr'; valid names: \[.*'bert', .*'cnn', .*'dilated_resnet', .*'identity', .*'mlp'.*'segnet'.*\]"):
    train.train_and_evaluate(c, workdir)
  c = tiny_config()
  c.model.trunk.widths = (3,)
  with pytest.raises(ValueError, match=r"unknown options \['widths'\]"):
    train.train_and_evaluate(c, workdir)


def test_label_out_of_range_names_task_and_example():
  spec = TaskSpec("digit", "multiclass", 10)
  labels = np.array([1, 2, 10, 3])
  with pytest.raises(LabelError, match=r"task 'digit'.*outside the classes 0..9; first at example 2"):
    tasks.validate_labels(spec, labels, np.ones(4, bool))
  # The same placeholder under mask=False is fine.
  tasks.validate_labels(spec, labels, np.array([True, True, False, True]))
  with pytest.raises(LabelError, match="task 'b'.*other than 0/1"):
    tasks.validate_labels(TaskSpec("b", "binary"), np.array([0, 2]), np.ones(2, bool))
  with pytest.raises(LabelError, match="task 'r'.*non-finite"):
    tasks.validate_labels(TaskSpec("r", "regression"), np.array([0.0, np.nan]), np.ones(2, bool))


def test_label_mask_shape_mismatch():
  spec = TaskSpec("age", "regression", 1)
  with pytest.raises(LabelError, match=r"task 'age': labels have shape \(5, 1\).*need \(5,\)"):
    tasks.validate_labels(spec, np.zeros((5, 1)), np.ones(5, bool))
  with pytest.raises(LabelError, match="task 'age': mask must be bool"):
    tasks.validate_labels(spec, np.zeros(5), np.ones(5))


def test_config_tasks_not_in_data(workdir):
  c = tiny_config()
  c.tasks = [dict(name="digit", kind="multiclass", num_outputs=10), dict(name="age", kind="regression")]
  with pytest.raises(LabelError, match=r"config tasks \['age'\] are not in the data"):
    train.train_and_evaluate(c, workdir)


def test_config_task_kind_that_does_not_fit_data(workdir):
  c = tiny_config()
  c.tasks = [dict(name="digit", kind="multiclass", num_outputs=5)]
  with pytest.raises(LabelError, match="task 'digit'.*outside the classes 0..4"):
    train.train_and_evaluate(c, workdir)


def test_bad_task_specs():
  with pytest.raises(ValueError, match="unknown kind 'rank'; valid kinds: .*'ranking'"):
    TaskSpec("t", "rank")
  with pytest.raises(ValueError, match="duplicate task names"):
    tasks.specs_from_config([dict(name="a", kind="binary"), dict(name="a", kind="binary")])
  with pytest.raises(ValueError, match=r"unknown metrics \['auc'\]"):
    TaskSpec("t", "regression", metrics=("auc",))


@DATASETS.register("test_exploding_labels")
def _exploding(seed=0):
  """Regression data where one label is 1e20: its squared error overflows float32."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(256, 8)).astype(np.float32)
  y = rng.normal(size=256).astype(np.float32)
  y[200] = 1e20
  ok = rng.normal(size=256).astype(np.float32)
  split = ArrayDataset(x, {"y": y, "ok": ok}, {"y": np.ones(256, bool), "ok": np.ones(256, bool)})
  clean = ArrayDataset(x, {"y": np.zeros(256, np.float32), "ok": ok},
                       {"y": np.ones(256, bool), "ok": np.ones(256, bool)})
  return DataSplits(split, clean)


def test_non_finite_loss_stops_names_task_and_keeps_good_checkpoint(workdir):
  c = tiny_config()
  c.data = dict(name="test_exploding_labels")
  c.tasks = [dict(name="ok", kind="regression"), dict(name="y", kind="regression")]
  c.batch_size = 16
  c.num_train_steps = 64
  c.checkpoint_every_steps = 1
  c.log_every_steps = 1000
  c.eval_batch_size = 256
  with pytest.raises(train.NonFiniteLossError, match=r"task\(s\) \['y'\] at step (\d+)") as e:
    train.train_and_evaluate(c, workdir)
  bad_step = int(e.value.args[0].split("at step ")[1].split(";")[0])
  params = train.final_params(workdir)
  import jax
  assert all(np.all(np.isfinite(np.asarray(p))) for p in jax.tree.leaves(params))
  steps = sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())
  assert steps[-1] == bad_step, (steps, bad_step)


def test_incompatible_workdir_names_the_keys(workdir):
  c = tiny_config()
  c.num_train_steps = 5
  train.train_and_evaluate(c, workdir)
  c.model.trunk.features = (64, 64)
  c.optimizer.learning_rate = 0.1
  with pytest.raises(IncompatibleWorkdirError, match=r"model.trunk.features.*optimizer.learning_rate"):
    train.train_and_evaluate(c, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["model"]["trunk"]["features"] == [32, 32]  # untouched


def test_failed_first_run_does_not_lock_the_workdir(workdir):
  c = tiny_config()
  c.num_train_steps = 3
  c.data.name = "mnist2d"
  with pytest.raises(KeyError):
    train.train_and_evaluate(c, workdir)
  c.data.name = "mnist1d"
  train.train_and_evaluate(c, workdir)  # no IncompatibleWorkdirError
