"""The quickstart config reaches what its docstring promises."""

import json
import os

import numpy as np

from configs import quickstart
from mtl_jax import train
from mtl_jax.data import build_dataset


def test_quickstart_reaches_documented_accuracy(workdir):
  config = quickstart.get_config()
  config.progress_bar = False
  results = train.train_and_evaluate(config, workdir)
  # Thresholds from configs/quickstart.py's docstring.
  assert results["test"]["digit"]["accuracy"] >= 0.50, results
  assert results["test"]["digit_ge5"]["accuracy"] >= 0.70, results
  # Missing labels really were missing: 30% of train labels hidden, eval has all.
  assert config.data.hide_rate == 0.3
  data = build_dataset(config.data)
  n = len(data.train)
  hidden = {t: 1 - np.asarray(m).mean() for t, m in data.train.mask.items()}
  tol = 4 * np.sqrt(0.3 * 0.7 / n)  # 4 binomial standard errors
  for task in ("digit", "digit_ge5"):
    assert abs(hidden[task] - 0.3) < tol, (task, hidden[task], n)
  # Hidden independently per task: both hidden for ~0.3 * 0.3 of the examples.
  both = np.mean(~data.train.mask["digit"] & ~data.train.mask["digit_ge5"])
  assert abs(both - 0.09) < 4 * np.sqrt(0.09 * 0.91 / n), both
  for split in (data.validation, data.test):
    assert all(np.asarray(m).all() for m in split.mask.values())
  assert results["test"]["digit"]["count"] == 1000 == len(data.test)
  assert results["validation"]["digit"]["count"] == len(data.validation)
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == results
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert lines[0]["step"] == 50 and "train/digit/loss" in lines[0]
  assert any("validation/digit/accuracy" in l for l in lines)
  assert os.listdir(os.path.join(workdir, "tensorboard"))
