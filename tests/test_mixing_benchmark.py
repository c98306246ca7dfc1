"""benchmarks/mixing_input.py --quick runs and reports consistent numbers."""

from conftest import run_benchmark


def test_mixing_input_benchmark_quick():
  res = run_benchmark("mixing_input.py", "--quick")
  assert res["benchmark"] == "mixing_input"
  for mode in ("mixed",):
    r = res["input"][mode]
    assert r["input_examples_per_s"] > 0 and r["step_consumes_examples_per_s"] > 0
    assert abs(r["input_over_consumption"] - r["input_examples_per_s"]
               / r["step_consumes_examples_per_s"]) < 0.05 * r["input_over_consumption"] + 0.01
    assert set(r["epochs_seen"]) == {"a", "b", "c", "d"}
  for r in res["masked_format"].values():  # both formats give the same task losses
    assert r["first_step_task_loss_max_abs_diff"] <= 1e-4
    assert r["masked_step_ms"] > 0 and r["routed_step_ms"] > 0 and r["masked_over_routed"] > 0
