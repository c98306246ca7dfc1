"""--config.KEY=VALUE on keys the config file does not set; the schema the docs name; config.json.

The parser runs in-process (no JAX work); one in-process run of ``mtl_jax.main`` trains the
quickstart with four keys its file does not set and checks what reached training.
"""

import glob
import json
import os
import re

import pytest

from conftest import ROOT
from mtl_jax import config_cli, config_keys, config_validation
from mtl_jax.checkpoint import IncompatibleWorkdirError, check_workdir_config
from mtl_jax.config_keys import ConfigError, Options

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.py")


def resolve(*flags, spec=QUICKSTART):
  _, overrides = config_cli.split_argv(["prog", *flags])
  return config_cli.resolve(config_cli.load_config(spec), overrides)


# ---- the schema is what the docs name, and what the code reads ----------------------------

def _documented_keys():
  """Every ``config.<key>`` in README.md and docs/, and every ``<top-level key>.<key>=``."""
  found = set()
  for path in [os.path.join(ROOT, "README.md")] + glob.glob(os.path.join(ROOT, "docs", "*.md")):
    text = open(path).read()
    found |= set(re.findall(r"(?<![\w/.])config\.([a-z_]\w*(?:\.[a-z_]\w*)*)", text))
    found |= {k for k in re.findall(r"(?<![\w/.])([a-z_]+(?:\.[a-z_]\w*)+)(?==)", text)
              if k.split(".")[0] in config_keys.TOP_LEVEL}
  return found - {"json"}  # workdir/config.json, a file


def _component_option(path):
  """``path`` is an option of some registered component of the Options dict above it."""
  parent, key = path.rsplit(".", 1)
  entry = config_keys.BY_PATH.get(parent)
  return isinstance(entry, Options) and any(
      key in config_cli.options_of(config_cli.REGISTRIES[kind].get(name))
      for _, kind, _ in entry.selectors for name in config_cli.REGISTRIES[kind])


def test_every_documented_key_is_in_the_schema():
  keys = _documented_keys()
  assert {"model.route_heads", "weighting.shared", "transfer.strategy", "data.data_dir"} <= keys
  missing = sorted(k for k in keys if k not in config_keys.BY_PATH and not _component_option(k))
  assert not missing, f"documented keys missing from mtl_jax/config_keys.py: {missing}"


def test_the_listing_shows_every_key_with_its_type_and_default():
  lines = config_cli.describe().splitlines()
  assert [line.split()[0] for line in lines] == [e.path for e in config_keys.SCHEMA]
  assert "model.route_heads              True or False, default False: (hard, pooled)" in lines[
      [e.path for e in config_keys.SCHEMA].index("model.route_heads")]


def test_schema_matches_the_options_the_code_reads():
  from mtl_jax import optim, partial_load, transfer
  from mtl_jax.data import mixing
  from mtl_jax.models import SHARING
  from mtl_jax.weighting import factory
  kids = lambda p: set(config_keys.children(p))  # noqa: E731
  assert kids("weighting") == set(factory.OPTIONS)
  assert kids("transfer") == set(transfer.OPTIONS)
  assert kids("init_from") == set(partial_load.INIT_FROM_KEYS)
  assert kids("optimizer") == set(optim.COMMON_OPTIONS).union(*optim.OPTIONS.values())
  assert {k: config_keys.BY_PATH[f"mixing.{k}"].default for k in kids("mixing")} == \
      mixing.MIXING_DEFAULTS
  # Documented model options: a field of some scheme, with that scheme's default.
  for key in kids("model") - set(config_keys.BY_PATH["model"].fixed):
    defaults = {SHARING.get(s).__dataclass_fields__[key].default for s in SHARING
                if key in SHARING.get(s).__dataclass_fields__}
    assert defaults, f"model.{key} is no scheme's option"
    if key != "trunk":
      assert defaults == {config_keys.BY_PATH[f"model.{key}"].default}, key
  assert config_keys.REQUIRED == ("data", "tasks", "model", "optimizer", "batch_size",
                                  "num_train_steps")


# ---- overrides ------------------------------------------------------------------------------

def test_keys_the_file_does_not_set_are_created_typed_and_nested_defaults_stay_absent():
  base = config_cli.load_config(QUICKSTART)
  assert "sharding" not in base and "route_heads" not in base.model and "weighting" not in base
  c = resolve("--config.sharding=fsdp", "--config.model.route_heads=True",
              "--config.weighting.gramian_engine=rows", "--config.optimizer.learning_rate=1",
              "--config.model.trunk.dropout=0.25", "--config.data.hide_rates.digit=0.5",
              "--config.num_devices=2", "--noconfig.progress_bar")
  assert c.sharding == "fsdp" and c.model.route_heads is True
  assert c.weighting.to_dict() == {"gramian_engine": "rows"}  # None parent -> dict
  lr = c.optimizer.learning_rate
  assert lr == 1.0 and isinstance(lr, float)
  assert c.model.trunk.to_dict() == {"name": "mlp", "features": (256, 256), "dropout": 0.25}
  assert c.data.hide_rates.to_dict() == {"digit": 0.5} and c.num_devices == 2
  assert c.progress_bar is False
  # Top-level defaults are filled in; nested ones are not (build_model checks scheme options).
  plain = resolve()
  assert {k: plain[k] for k in config_keys.DEFAULTS if k not in base} == {
      k: v for k, v in config_keys.DEFAULTS.items() if k not in base}
  assert set(plain.model) == {"sharing", "trunk"} and set(plain.optimizer) == set(base.optimizer)
  assert "sharding" not in base  # the loaded config itself is not modified


@pytest.mark.parametrize("flag,match", [
    ("--config.num_train_steps=abc",
     r"config.num_train_steps = 'abc': must be an int \(--config.num_train_steps=abc\)"),
    ("--config.model.trunk.features=abc", r"model.trunk.features = 'abc': must be a sequence"),
    ("--config.progress_bar=maybe", r"config.progress_bar = 'maybe': must be True or False"),
    ("--config.num_train_steps", r"--config.num_train_steps needs a value \(an int\)"),
    ("--config.num_train_step=5", r"unknown config key 'num_train_step'; nearest: num_train_steps"),
    ("--config.model.rout_heads=True", r"unknown config key 'model.rout_heads' \(sharing scheme "
     r"'hard' has no option 'rout_heads'\); nearest: model.route_heads \(True or False"),
    ("--config.route_heads=True", r"unknown config key 'route_heads'; nearest: model.route_heads"),
    ("--config.sharing=fsdp", r"unknown config key 'sharing'; nearest: sharding"),
    ("--config.model.trunk.featurs=(8,)", r"trunk 'mlp' has no option 'featurs'.*nearest: "
     r"model.trunk.features \(trunk option, a sequence of int\)"),
    ("--config.optimizer.momentm=0.9", r"nearest: optimizer.momentum \("),
    ("--config.data.foo=1", r"dataset 'mnist1d' has no option 'foo'"),
    ("--config.weighting.options.alpha=1", r"loss weighting 'equal' has no option 'alpha'"),
    ("--config.weighting.aggregator=upgrd", r"unknown aggregator; did you mean \['upgrad'"),
    ("--config.tasks.weight=2", r"config.tasks is a sequence of dict, not a dict"),
])
def test_bad_overrides_name_the_key(flag, match):
  with pytest.raises(ConfigError, match=match):
    resolve(flag)


def test_a_key_the_file_sets_outside_the_schema_keeps_its_type():
  base = config_cli.load_config(QUICKSTART)
  base.fork_dir, base.optimizer.beta = "/data", 0.5  # e.g. keys a fork's feature reads
  _, ov = config_cli.split_argv(["prog", "--config.fork_dir=/other", "--config.optimizer.beta=1"])
  c = config_cli.resolve(base, ov)
  assert c.fork_dir == "/other" and c.optimizer.beta == 1.0
  with pytest.raises(ConfigError, match="config.optimizer.beta = 'x': must be a float"):
    config_cli.resolve(base, config_cli.split_argv(["prog", "--config.optimizer.beta=x"])[1])
  with pytest.raises(ConfigError, match="unknown config keys \\['fork_dir'\\]"):
    config_validation.check_config_keys(c)  # validity stays the checks' decision


def test_options_follow_the_component_the_final_config_names():
  # The scheme named later on the command line decides which options are valid.
  c = resolve("--config.model.num_experts=4", "--config.model.sharing=mmoe")
  assert c.model.num_experts == 4 and c.model.sharing == "mmoe"
  with pytest.raises(ConfigError, match="sharing scheme 'soft' has no option 'route_heads'"):
    resolve("--config.model.sharing=soft", "--config.model.route_heads=True")
  c = resolve("--config.model.trunk.name=cnn", "--config.model.trunk.kernel_sizes=(3,)")
  assert c.model.trunk.kernel_sizes == (3,)
  c = resolve("--config.weighting.name=gradnorm", "--config.weighting.options.alpha=0.12")
  assert c.weighting.options.alpha == 0.12
  c = resolve("--config.weighting={'aggregator': 'mgda'}", "--config.weighting.mode=jacobian")
  assert c.weighting.to_dict() == {"aggregator": "mgda", "mode": "jacobian"}
  with pytest.raises(ConfigError, match="would discard it; give the parent first"):
    resolve("--config.weighting.mode=jacobian", "--config.weighting={'aggregator': 'mgda'}")


def test_invalid_combinations_fail_before_data_loads_naming_the_key():
  with pytest.raises(ConfigError, match="weighting.gramian_engine applies to aggregators"):
    config_validation.check_config_keys(resolve("--config.weighting.gramian_engine=rows"))
  with pytest.raises(ConfigError, match=r"config.num_devices = 0: must be None"):
    config_validation.check_config_keys(resolve("--config.num_devices=0"))
  config_validation.check_config_keys(resolve("--config.weighting.aggregator=upgrad",
                                              "--config.weighting.gramian_engine=rows"))


def test_config_file_errors_are_config_errors(tmp_path):
  with pytest.raises(ConfigError, match=r"--config=nope.py:x: no config file 'nope.py'"):
    config_cli.load_config("nope.py:x")
  (tmp_path / "c.py").write_text("X = 1\n")
  with pytest.raises(ConfigError, match="defines no get_config"):
    config_cli.load_config(str(tmp_path / "c.py"))
  with pytest.raises(ConfigError, match=r"unknown config argument\(s\) \['runlocl'\]"):
    config_cli.load_config(QUICKSTART + ":runlocl")


def test_split_argv_keeps_absl_flags_and_order():
  rest, ov = config_cli.split_argv(["prog", "--config=c.py:x", "--config.a.b=1", "--workdir=w",
                                    "-config.c=(1, 2)", "--noconfig.d", "--", "--config.e=1"])
  assert rest == ["prog", "--config=c.py:x", "--workdir=w", "--", "--config.e=1"]
  assert ov == [("a.b", "1", False), ("c", "(1, 2)", False), ("d", None, True)]


# ---- config.json: the resolved config, and resume across both forms ------------------------

def test_workdir_config_with_and_without_filled_defaults_resume_each_other(tmp_path):
  base = config_cli.load_config(QUICKSTART)
  workdir = str(tmp_path)
  check_workdir_config(workdir, base.to_json())  # as written before defaults were filled in
  os.makedirs(os.path.join(workdir, "checkpoints", "10"))
  check_workdir_config(workdir, resolve().to_json())  # the same run: resumes
  with pytest.raises(IncompatibleWorkdirError, match=r"num_seeds: 1 -> 2"):
    check_workdir_config(workdir, resolve("--config.num_seeds=2").to_json())


def test_main_prints_the_resolved_config_and_trains_with_it(tmp_path, capsys):
  from absl import flags
  from mtl_jax import main
  workdir = str(tmp_path / "run")
  args = ["prog", "--config=configs/quickstart.py:runlocal", "--config.num_train_steps=2",
          "--config.log_every_steps=1", "--config.eval_every_steps=0", "--config.batch_size=16",
          "--config.checkpoint_every_steps=0", "--noconfig.progress_bar",
          "--config.model.trunk.features=(8,)", "--config.sharding=fsdp",
          "--config.model.route_heads=True", "--config.weighting.aggregator=upgrad",
          "--config.weighting.gramian_engine=rows"]
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    for extra in (["--print_config"], [f"--workdir={workdir}"]):
      flags.FLAGS.unparse_flags()
      main.parse_flags(args + extra)
      main.main(["prog"])
  finally:
    flags.FLAGS.unparse_flags()
    os.chdir(cwd)
  printed = json.loads(capsys.readouterr().out.split("| split |")[0])
  assert printed["weighting"] == {"aggregator": "upgrad", "gramian_engine": "rows"}
  assert printed["model"]["route_heads"] is True and printed["sharding"] == "fsdp"
  assert printed["num_seeds"] == 1 and printed["num_train_steps"] == 2  # defaults, overrides
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f) == printed
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in rows if "train/loss" in r]
  assert [r["step"] for r in train] == [1, 2]
  for r in train:  # the aggregator ran: UPGrad on two non-conflicting gradients is their mean
    cos = r["train/grad_cosine/digit__digit_ge5"]
    assert cos > 0 and r["train/digit/weight"] == pytest.approx(0.5, abs=1e-6)
    assert r["train/digit_ge5/weight"] == pytest.approx(0.5, abs=1e-6)
