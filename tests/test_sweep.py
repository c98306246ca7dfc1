"""The study grid runner: skips finished cells, and the mean ± s.e. arithmetic."""

import math
import os

import numpy as np
import pytest

from conftest import tiny_config
from mtl_jax import sweep


def test_mean_se_against_numpy():
  v = [0.5, 0.7, 0.9, 0.4]
  m, se, n = sweep.mean_se(v)
  assert m == pytest.approx(np.mean(v))
  assert se == pytest.approx(np.std(v, ddof=1) / 2.0)
  assert n == 4
  assert math.isnan(sweep.mean_se([1.0])[1])


def test_run_grid_runs_each_pair_once(tmp_path):
  calls = []

  def make_config(cell, seed):
    calls.append((cell, seed))
    c = tiny_config(seed=seed)
    c.num_train_steps = 2
    c.checkpoint_every_steps = 0
    c.model.trunk.features = (8,) if cell == "narrow" else (16,)
    return c

  path = sweep.run_grid(str(tmp_path), make_config, ["narrow", "wide"], [0, 1], log=lambda s: None)
  sweep.run_grid(str(tmp_path), make_config, ["narrow", "wide"], [0, 1, 2], log=lambda s: None)
  rows = sweep.read_results(path)
  assert [(r["cell"], r["seed"]) for r in rows] == [
      ("narrow", 0), ("narrow", 1), ("wide", 0), ("wide", 1), ("narrow", 2), ("wide", 2)]
  md = sweep.table(rows, "test", "digit", "accuracy", scale=100)
  assert md.count("\n") == 3 and "| narrow |" in md and "| 3 |" in md


def test_run_grid_vmaps_seeds_into_one_program(tmp_path):
  calls = []

  def make_config(cell, seed):
    calls.append((cell, seed))
    c = tiny_config(seed=seed)
    c.num_train_steps = 2
    c.checkpoint_every_steps = 0
    return c

  path = sweep.run_grid(str(tmp_path), make_config, ["a"], [0, 1, 2], log=lambda s: None,
                        vmap_seeds=True)
  assert os.listdir(tmp_path / "runs" / "a") == ["seeds_0-2"]  # one program
  rows = sweep.read_results(path)
  assert [r["seed"] for r in rows] == [0, 1, 2]
  assert all("digit" in r["test"] for r in rows)


def test_write_results_md_keeps_the_written_notes(tmp_path):
  path = str(tmp_path / "results.md")
  sweep.write_results_md(path, "# table v1\n\n")
  assert open(path).read() == "# table v1\n\n<!-- notes -->\n"
  with open(path, "a") as f:
    f.write("Our reading of the table.\n")
  sweep.write_results_md(path, "# table v2\n\n")
  assert open(path).read() == "# table v2\n\n<!-- notes -->\nOur reading of the table.\n"


def _row(cell, seed, config, setup=None):
  prov, flat = sweep.provenance(config, seed, setup, commit="abc")
  return {"cell": cell, "seed": seed, "test": {}, "provenance": prov}, flat


def test_rows_are_keyed_and_a_changed_config_is_refused(tmp_path):
  path = sweep.results_path(str(tmp_path))
  c = tiny_config(seed=0)
  c.num_train_steps = 2
  row, flat = _row("a", 0, c)
  sweep.append_rows(path, [row], flat)
  assert row["provenance"]["steps"] == 2

  def make_config(cell, seed):
    c = tiny_config(seed=seed)
    c.num_train_steps = 3  # not the config that made the row
    return c

  with pytest.raises(ValueError, match=r"cell 'a' seed 0 was made by another config: "
                                       r"num_train_steps: 2 vs 3"):
    sweep.run_grid(str(tmp_path), make_config, ["a"], [0], log=lambda s: None)
  with pytest.raises(ValueError, match="another study setup: data: 'gen' vs 'file'"):
    sweep.done_or_mismatch(path, "a", 0, _row("a", 0, c, {"data": "file"})[0]["provenance"], flat,
                           [_row("a", 0, c, {"data": "gen"})[0]])


def test_seeds_share_the_setup_hash_and_a_mixed_table_is_refused(tmp_path):
  path = str(tmp_path / "results.jsonl")
  c0, c1 = tiny_config(seed=0), tiny_config(seed=1)
  r0, flat = _row("a", 0, c0)
  r1, _ = _row("a", 1, c1)
  assert r0["provenance"]["setup_hash"] == r1["provenance"]["setup_hash"]
  assert r0["provenance"]["config"] != r1["provenance"]["config"]
  c1.optimizer.learning_rate = 0.5
  r1b, flat1b = _row("a", 1, c1)
  sweep.append_rows(path, [r0], flat)
  sweep.append_rows(path, [r1b], flat1b)
  with pytest.raises(ValueError, match=r"cell 'a' mixes configs .*optimizer.learning_rate"):
    sweep.read_results(path)
  other, _ = _row("b", 0, c0, {"data": "school"})
  with pytest.raises(ValueError, match="different study setups.*data"):
    sweep.check_rows([r0, other])
  with pytest.raises(ValueError, match="legacy rows without provenance"):
    sweep.check_rows([r0, {"cell": "b", "seed": 0}])
  sweep.check_rows([{"cell": "b", "seed": 0}, {"cell": "b", "seed": 1}])  # all legacy: fine


def test_a_data_file_is_fingerprinted_and_results_md_says_so(tmp_path):
  data = tmp_path / "school.csv"
  data.write_text("1,2\n")
  c = tiny_config(seed=0)
  c.data.path = str(data)
  h1 = _row("a", 0, c)[0]["provenance"]["setup_hash"]
  data.write_text("1,3\n")
  r, _ = _row("a", 0, c, {"data": "file"})
  assert r["provenance"]["setup_hash"] != h1  # same path, other bytes
  assert sweep.results_path("d", "school-12ab") == os.path.join("d", "results_school-12ab.jsonl")
  md = str(tmp_path / "results.md")
  sweep.write_results_md(md, "# t\n\n", [r])
  text = open(md).read()
  assert "study setup data=file" in text and "commits `abc`" in text
  assert text.endswith("<!-- notes -->\n")


def test_paired_mean_se_pairs_by_seed_over_the_seeds_both_hold():
  a = {0: 1.0, 1: 4.0, 2: 2.0, 7: 100.0}   # seed 7 has no partner: left out
  b = {0: 0.5, 1: 1.0, 2: 2.5, 3: -9.0}    # seed 3 likewise
  m, se, n = sweep.paired_mean_se(a, b)
  d = np.array([0.5, 3.0, -0.5])
  assert n == 3
  np.testing.assert_allclose([m, se], [d.mean(), d.std(ddof=1) / np.sqrt(3)])
  assert sweep.paired_mean_se({0: 1.0}, {1: 1.0})[2] == 0
