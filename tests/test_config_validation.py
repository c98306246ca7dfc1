"""Bad config values and bad data fail up front, naming the key (or split/example) and the range.

Through ``train.train_and_evaluate`` (validation runs before any data is
loaded, so each case takes milliseconds), the CLI for what only the CLI
parses, and ``check_splits`` directly for the loaded-data checks.
"""

import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from conftest import ROOT, tiny_config
from mtl_jax import train
from mtl_jax.config_validation import ConfigError
from mtl_jax.data.base import ArrayDataset
from mtl_jax.data.checks import DataCheckError, check_splits


def _set(c, dotted, value):
  *parents, leaf = dotted.split(".")
  for p in parents:
    c = c[p]
  if leaf in c and c[leaf] is None or (leaf in c and type(c[leaf]) is not type(value)):
    del c[leaf]  # ConfigDict fields are typed: drop the field to set a wrongly typed value
  c[leaf] = value


@pytest.mark.parametrize("key,value,match", [
    ("num_train_steps", 0, r"config.num_train_steps = 0: must be an integer >= 1"),
    ("num_train_steps", -5, r"config.num_train_steps = -5: must be an integer >= 1"),
    ("log_every_steps", -1, r"config.log_every_steps = -1: must be an integer >= 0"),
    ("eval_every_steps", -1, r"config.eval_every_steps = -1: must be an integer >= 0"),
    ("checkpoint_every_steps", -2, r"config.checkpoint_every_steps = -2: must be an integer >= 0"),
    ("keep_checkpoints", 0, r"config.keep_checkpoints = 0: must be an integer >= 1"),
    ("batch_size", 0, r"config.batch_size = 0: must be an integer >= 1"),
    ("batch_size", -32, r"config.batch_size = -32: must be an integer >= 1"),
    ("eval_batch_size", 0, r"config.eval_batch_size = 0: must be an integer >= 1"),
    ("optimizer.learning_rate", -1e-3, r"config.optimizer.learning_rate = -0.001: must be > 0"),
    ("optimizer.grad_clip_norm", -1.0, r"config.optimizer.grad_clip_norm = -1.0: must be None or >= 0"),
    ("model.trunk.dropout", 1.0, r"config.model.trunk.dropout = 1.0: must be a rate in \[0, 1\)"),
    ("model.trunk.dropout", -0.1, r"config.model.trunk.dropout = -0.1: must be a rate in \[0, 1\)"),
    ("model.trunk.features", (), r"config.model.trunk.features = \(\): must be a non-empty sequence"),
    ("model.trunk.features", (32, -4), r"config.model.trunk.features = \(32, -4\): must be a non-empty sequence of positive"),
    ("init_from", "/some/workdir", r"config.init_from = '/some/workdir': must be None or dict\(workdir="),
    ("num_devices", 0, r"config.num_devices = 0: must be None \(every device\) or an integer >= 1"),
    ("num_devices", -1, r"config.num_devices = -1: must be None"),
    ("num_devices", "2", r"config.num_devices = '2': must be None"),
    ("data.hide_rate", 1.0, r"config.data.hide_rate = 1.0: must be a rate in \[0, 1\) \(1 hides every train label"),
])
def test_bad_value_names_key_and_range(workdir, key, value, match):
  c = tiny_config()
  _set(c, key, value)
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(c, workdir)


def test_num_experts_zero(workdir):
  c = tiny_config()
  c.model = dict(sharing="mmoe", trunk=dict(name="mlp", features=(8,)), num_experts=0)
  with pytest.raises(ConfigError, match=r"config.model.num_experts = 0: must be an integer >= 1"):
    train.train_and_evaluate(c, workdir)


def test_regularizer_without_weight(workdir):
  c = tiny_config()
  c.regularizers = [dict(name="l2", select="trunk/.*")]
  with pytest.raises(ConfigError, match=r"config.regularizers\[0\] = .* has no 'weight'"):
    train.train_and_evaluate(c, workdir)


@pytest.mark.parametrize("name,option,match", [
    ("sgd", "momentm", r"optimizer 'sgd': unknown option\(s\) \['momentm'\]; valid options: "
                       r"\[.*'momentum'.*\]"),
    ("sgd", "weight_decay", r"optimizer 'sgd': unknown option\(s\) \['weight_decay'\] \("
                            r"'weight_decay' is read only by \['adamw'\]\); valid options"),
    ("adam", "weight_decay", r"optimizer 'adam': unknown option\(s\) \['weight_decay'\]"),
    ("adamw", "momentum", r"optimizer 'adamw': unknown option\(s\) \['momentum'\] \("
                          r"'momentum' is read only by \['sgd'\]\)"),
])
def test_optimizer_option_the_optimizer_ignores(workdir, name, option, match):
  c = tiny_config()
  c.optimizer.name = name
  c.optimizer[option] = 0.9 if option.startswith("moment") else 1e-4
  with pytest.raises(ValueError, match=match):
    train.train_and_evaluate(c, workdir)


def test_valid_optimizer_options_pass(workdir):
  from mtl_jax import optim
  optim.check_options(dict(name="sgd", learning_rate=0.1, momentum=0.9, grad_clip_norm=1.0))
  optim.check_options(dict(name="adamw", learning_rate=0.1, weight_decay=1e-4, warmup_steps=5))


def _cli(*flags, timeout=240):
  return subprocess.run([sys.executable, "-m", "mtl_jax.main", *flags], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout)


def test_cli_unknown_config_argument(tmp_path):
  r = _cli("--config=configs/quickstart.py:runlocl", f"--workdir={tmp_path}")
  assert r.returncode != 0
  assert "unknown config argument(s) ['runlocl']" in r.stderr and "['runlocal']" in r.stderr, \
      r.stderr[-2000:]


@pytest.mark.parametrize("module,arg,match", [
    ("quickstart", "runlocl", r"unknown config argument\(s\) \['runlocl'\].*valid: \['runlocal'\]"),
    ("mnist1d_upstream", "runlocl", r"unknown config argument\(s\) \['runlocl'\]"),
    ("mnist1d_transfer", "linear_probe,smal", r"unknown config argument\(s\) \['smal'\].*'small'"),
    ("mnist1d_transfer", "linear_prob,small", r"unknown strategy 'linear_prob'"),
    ("mmoe_synthetic", "0.5,runlocl", r"unknown config argument 'runlocl'"),
    ("mmoe_synthetic", "1.5", r"correlation p=1.5 .* valid: \[0, 1\]"),
])
def test_every_config_file_checks_its_argument(module, arg, match):
  import importlib
  get_config = importlib.import_module(f"configs.{module}").get_config
  with pytest.raises(ConfigError, match=match):
    get_config(arg)
  get_config()  # the default argument is fine


def test_cli_num_devices_override(tmp_path):
  """The README's --config.num_devices=N works (absl refuses to override a None default)."""
  common = ["--config=configs/quickstart.py", "--config.num_train_steps=2",
            "--config.log_every_steps=1", "--config.checkpoint_every_steps=0",
            "--config.eval_every_steps=0", "--config.progress_bar=False",
            "--config.batch_size=16", "--config.model.trunk.features=(8,)"]
  r = _cli(*common, "--config.num_devices=0", f"--workdir={tmp_path / 'zero'}")
  assert r.returncode != 0 and "config.num_devices = 0: must be None" in r.stderr, r.stderr[-2000:]
  r = _cli(*common, "--config.num_devices=1", f"--workdir={tmp_path / 'one'}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "| test | digit |" in r.stdout


# ---- check_splits: loaded data ----------------------------------------------------------

def _ds(n=6, shape=(3,), fill=0.0):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(n,) + shape).astype(np.float32) + fill
  return ArrayDataset(x, {"y": rng.normal(size=(n, 1)).astype(np.float32)},
                      {"y": np.ones(n, bool)})


def test_check_splits_accepts_good_data():
  check_splits({"train": _ds(), "validation": _ds(4), "test": _ds(5)})


@pytest.mark.parametrize("split", ["validation", "test", "train"])
def test_nan_or_inf_inputs_name_split_example_and_key(split):
  splits = {"train": _ds(), "validation": _ds(4), "test": _ds(5)}
  splits[split].inputs[2, 1] = np.nan
  splits[split].inputs[3, 0] = np.inf
  with pytest.raises(DataCheckError, match=rf"split '{split}': key 'inputs' of example 2 is nan "
                                           rf"at position \(1,\) \(2 examples have NaN/Inf"):
    check_splits(splits)


def test_nan_in_labelled_target_names_task_and_example():
  splits = {"train": _ds(), "validation": _ds(4)}
  splits["validation"].labels["y"][1] = np.nan
  splits["validation"].labels["y"][0] = np.nan
  splits["validation"].mask["y"][0] = False  # masked: ignored
  with pytest.raises(DataCheckError, match=r"split 'validation': labels of task 'y' of example 1"):
    check_splits(splits)


def test_other_input_shape_than_train():
  with pytest.raises(DataCheckError, match=r"split 'validation': key 'inputs' has per-example "
                                           r"shape \(4,\), but train has \(3,\)"):
    check_splits({"train": _ds(), "validation": _ds(4, shape=(4,))})


@pytest.mark.parametrize("split", ["train", "validation"])
def test_empty_split(split):
  splits = {"train": _ds(), "validation": _ds(4)}
  splits[split] = _ds(0)
  with pytest.raises(DataCheckError, match=rf"split '{split}' has no examples"):
    check_splits(splits)


def test_task_without_any_train_label():
  splits = {"train": _ds(), "validation": _ds(4)}
  splits["train"].mask["y"][:] = False
  with pytest.raises(DataCheckError, match=r"split 'train': task 'y' has no labelled example"):
    check_splits(splits)


def test_tfds_dataset_not_prepared(tmp_path):
  from mtl_jax.data.tfds_source import DatasetNotPreparedError, tfds_dataset
  with pytest.raises(DatasetNotPreparedError,
                     match=rf"TFDS dataset 'mnist' is not prepared in data_dir {tmp_path}"):
    tfds_dataset("mnist", tasks={"digit": "label"}, data_dir=str(tmp_path))
