"""The study grid runner: skips finished cells, and the mean ± s.e. arithmetic."""

import math

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
  assert calls == [("narrow", 0), ("narrow", 1), ("wide", 0), ("wide", 1), ("narrow", 2), ("wide", 2)]
  rows = sweep.read_results(path)
  assert len(rows) == 6
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
  assert calls == [("a", 0)]
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
