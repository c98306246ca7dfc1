"""Smoke test of benchmarks/dense_step_time.py (slow file): its --smoke run prints one JSON
object, the torch twin has mtl_jax's parameter count and initial losses, every side is timed
(none skipped) and XLA's memory of every mtl_jax step is reported. Ratios are measured by full
runs, never asserted here."""

import importlib.util
import math

import numpy as np
import pytest

from conftest import run_benchmark

if not all(importlib.util.find_spec(m) for m in ("torch", "torchjd")):
  pytest.skip("needs torch and torchjd (oracle extra)", allow_module_level=True)


@pytest.fixture(scope="module")
def result():
  return run_benchmark("dense_step_time.py", "--smoke")


def test_same_model_every_side_timed_and_memory(result):
  assert result["benchmark"] == "dense_step_time" and result["config"]["smoke"] is True
  assert result["params"]["mtl_jax"] == result["params"]["torch"] > 0
  np.testing.assert_allclose(result["initial_losses"]["torch"], result["initial_losses"]["mtl_jax"],
                             rtol=2e-4, atol=1e-5)
  assert result["skipped"] == {}
  assert set(result["step_time_ms"]) == {"mtl_jax/ew", "mtl_jax/upgrad", "torch/ew",
                                         "loop/upgrad", "torchjd_autogram/upgrad"}
  assert all(math.isfinite(v) and v > 0 for v in result["step_time_ms"].values())
  assert result["strategies"]["mtl_jax/upgrad"] == "GramianStrategy"
  assert result["memory_bytes"]["mtl_jax/ew"]["total"] > 0
  assert result["memory_ratio_vs_ew"]["mtl_jax/ew"] == 1.0
  assert set(result["ratio_vs_loop"]) == set(result["ratio_vs_torchjd"]) == {"upgrad"}
