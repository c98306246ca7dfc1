"""The quickstart config reaches what its docstring promises."""

import json
import os

from configs import quickstart
from mtl_jax import train


def test_quickstart_reaches_documented_accuracy(workdir):
  config = quickstart.get_config()
  config.progress_bar = False
  results = train.train_and_evaluate(config, workdir)
  # Thresholds from configs/quickstart.py's docstring.
  assert results["test"]["digit"]["accuracy"] >= 0.50, results
  assert results["test"]["digit_ge5"]["accuracy"] >= 0.70, results
  # Missing labels really were missing: 30% of train labels hidden, eval has all.
  assert results["test"]["digit"]["count"] == 1000
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f) == results
  lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  assert lines[0]["step"] == 50 and "train/digit/loss" in lines[0]
  assert any("validation/digit/accuracy" in l for l in lines)
  assert os.listdir(os.path.join(workdir, "tensorboard"))
