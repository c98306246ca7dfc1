"""benchmarks/device_suite.py --smoke (the accelerator check, tiny shapes on two simulated CPU
devices) runs every section, and its numbers are consistent with each other and with closed
forms; benchmarks/device_table.py renders them in docs/performance.md's layout.

One subprocess for the whole file: the suite is mostly compile time.
"""

import math
import os
import sys

import pytest

from conftest import ROOT, run_benchmark

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import device_table  # noqa: E402

SECTIONS = ("peak", "train_step", "gramian", "sharding", "streaming")
MODELS = ("mlp", "resnet18", "vit_ti", "bert_minilm")


@pytest.fixture(scope="module")
def suite():
  return run_benchmark("device_suite.py", "--smoke", timeout=300, fresh=True)  # sets XLA_FLAGS


def positive(x):
  return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def test_every_section_ran_on_two_cpu_devices(suite):
  assert suite["smoke"] is True
  for name in SECTIONS:
    assert "error" not in suite[name] and not suite[name].get("skipped"), (name, suite[name])
  env = suite["environment"]
  assert env["backend"] == "cpu" and env["device_count"] == 2 and env["jax"]
  assert all(positive(v) for v in suite["section_s"].values()), suite["section_s"]


def test_peak_is_two_n_cubed_over_the_time(suite):
  peak = suite["peak"]
  assert set(peak["peak_tflops"]) == {"float32", "bfloat16", "float32_highest"}
  for r in peak["rows"].values():
    assert positive(r["ms"]) and positive(r["tflops_best"]) and r["tflops_best"] >= r["tflops_median"]
    assert r["tflops_median"] == pytest.approx(2 * r["n"] ** 3 / (r["ms"] * 1e9), rel=1e-3)
  for dtype, best in peak["peak_tflops"].items():
    assert best == max(r["tflops_best"] for r in peak["rows"].values() if r["dtype"] == dtype)


def test_train_step_throughput_and_mfu(suite):
  sec, peak = suite["train_step"], suite["peak"]["peak_tflops"]
  assert "cost_analysis" in sec["flop_count"]
  assert set(sec["models"]) == set(MODELS)
  for name, m in sec["models"].items():
    assert m["float32"]["params"] == m["bfloat16"]["params"], name
    for dtype in ("float32", "bfloat16"):
      r = m[dtype]
      assert positive(r["step_ms"]) and positive(r["flops_per_step"]), (name, dtype, r)
      assert positive(r["flops_per_step_lowered"]) and positive(r["compile_s"])
      assert r[f"{m['unit']}_per_s"] == pytest.approx(m["per_step"] / r["step_ms"] * 1e3, rel=1e-3)
      achieved = r["flops_per_step"] / (r["step_ms"] / 1e3) / 1e12
      assert r["achieved_tflops"] == pytest.approx(achieved, rel=1e-3)
      assert r["mfu"] == pytest.approx(achieved / peak[dtype], rel=1e-3)
      assert 0 < r["mfu"] < 1.5, (name, dtype, r["mfu"])
    # float32 computes in float32 only; bfloat16 puts (nearly) every matmul in bfloat16.
    assert set(m["float32"]["matmul_dtypes"]) == {"f32"}, (name, m["float32"]["matmul_dtypes"])
    dots = m["bfloat16"]["matmul_dtypes"]
    assert dots.get("bf16", 0) > dots.get("f32", 0), (name, dots)
    assert positive(m["bf16_speedup"])
  assert sec["models"]["bert_minilm"]["unit"] == "tokens"
  assert sec["models"]["resnet18"]["unit"] == "images"
  # MLP 8 -> 16 and two stacked binary heads: closed-form parameter count.
  assert sec["models"]["mlp"]["float32"]["params"] == 8 * 16 + 16 + 2 * (16 + 1)


def test_gramian_time_and_memory_against_ew(suite):
  rows = suite["gramian"]["rows"]
  assert rows
  for t, row in rows.items():
    for name in ("ew", "upgrad_leaf", "upgrad_rows"):
      mem = row[name]["memory_bytes"]
      assert positive(row[name]["step_ms"]), (t, name)
      assert mem["total"] == mem["argument"] + mem["output"] - mem["alias"] + mem["temp"]
      if name != "ew":
        assert positive(row[name]["time_over_ew"])
        assert row[name]["temp_memory_over_ew"] == pytest.approx(
            mem["temp"] / row["ew"]["memory_bytes"]["temp"])
        assert row[name]["temp_memory_over_ew"] > 0 and row[name]["total_memory_over_ew"] > 0


def test_sharding_splits_parameters_as_the_layouts_say(suite):
  rows = suite["sharding"]["rows"]
  assert set(rows) == {"replicated", "fsdp", "tensor_parallel"}
  for r in rows.values():
    assert positive(r["step_ms"]) and positive(r["time_over_replicated"])
  w, t = 16, 8  # MLP 16 -> 16 -> 16, 8 stacked binary heads, float32
  trunk, heads = 2 * (w * w + w), t * w + t
  assert rows["replicated"]["param_bytes_device0"] == 4 * (trunk + heads)
  # fsdp: every leaf has an even dimension, so each device holds half of every leaf.
  assert rows["fsdp"]["param_bytes_device0"] == 4 * (trunk + heads) // 2
  # tensor parallel: trunk kernels and biases split on their output; heads (1 output) are not.
  assert rows["tensor_parallel"]["param_bytes_device0"] == 4 * (trunk // 2 + heads)
  assert rows["tensor_parallel"]["mesh"] == {"data": 1, "model": 2}


def test_streaming_input(suite):
  rows = suite["streaming"]["rows"]
  assert set(rows) == {"in_memory", "workers_0"}
  for name, r in rows.items():
    for key in ("input_examples_per_s", "step_consumes_examples_per_s", "step_ms_fixed_batch",
                "step_ms_with_prefetching_feed"):
      assert positive(r[key]), (name, key, r)


def test_markdown_tables_fill_the_docs_layout(suite):
  md = device_table.markdown(suite)
  with open(os.path.join(ROOT, "docs", "performance.md")) as f:
    doc = f.read()
  for name, header in device_table.HEADERS.items():
    assert header in md and header in doc, name
  assert "(failed" not in md and "(not run)" not in md and "(skipped" not in md
  mlp = suite["train_step"]["models"]["mlp"]["float32"]
  assert f"| mlp | float32 | 8 | 8 | {device_table.fmt(mlp['step_ms'])} |" in md
  assert device_table.fmt(None) == "—" and device_table.fmt(0.012345) == "0.0123"
  assert device_table.fmt(123456.7) == "123,457"
