"""Markdown tables from a ``device_suite.py`` JSON, to paste into docs/performance.md.

    python benchmarks/device_table.py device_suite.json

No JAX needed: it only reads the JSON. A section that was skipped or failed
prints its reason instead of a table.
"""

import json
import math
import sys

HEADERS = {
    "environment": "| device | devices | backend | jax | jaxlib | default matmul precision | smoke |",
    "peak": "| dtype | n | ms per product | TFLOP/s (median) | TFLOP/s (best) |",
    "train_step": ("| model | dtype | batch | shape | step ms | throughput | achieved TFLOP/s | "
                   "MFU | bf16 speedup | matmul dtypes | compile s |"),
    "gramian": "| T | method | step ms | time / EW | temp memory / EW | peak memory / EW |",
    "sharding": "| layout | mesh (data x model) | step ms | time / replicated | parameter bytes on device 0 |",
    "streaming": ("| variant | input examples/s | step consumes examples/s | step ms (fixed batch) "
                  "| step ms (prefetching feed) | loop overhead |"),
}
TITLES = {"environment": "Environment", "peak": "Matmul peak", "train_step": "Train step",
          "gramian": "Per-task gradients: the Gramian path against EW",
          "sharding": "Parameter sharding", "streaming": "Streaming input"}


def fmt(x, digits: int = 3) -> str:
  """Numbers to ``digits`` significant figures; None (undefined) as an em dash."""
  if x is None:
    return "—"
  if isinstance(x, bool) or not isinstance(x, (int, float)):
    return str(x)
  if not math.isfinite(x):
    return str(x)
  if isinstance(x, int) or abs(x) >= 10 ** digits:
    return f"{x:,.0f}"
  return f"{x:.{digits}g}"


def _row(cells) -> str:
  return "| " + " | ".join(cells) + " |"


def _table(header, rows):
  n = header.count("|") - 1
  return [header, "|" + "---|" * n] + [_row(r) for r in rows]


def rows_environment(env, result):
  return [[env.get("device_kind", "?"), fmt(env.get("device_count")), env.get("backend", "?"),
           env.get("jax", "?"), env.get("jaxlib", "?"), env.get("default_matmul_precision", "?"),
           str(result.get("smoke"))]]


def rows_peak(sec):
  return [[r["dtype"], fmt(r["n"]), fmt(r["ms"]), fmt(r["tflops_median"]), fmt(r["tflops_best"])]
          for r in sec["rows"].values()]


def rows_train_step(sec):
  out = []
  for model, m in sec["models"].items():
    shape = f"seq {m['seq_len']}" if "seq_len" in m else "x".join(map(str, m["input_shape"]))
    for dtype in ("float32", "bfloat16"):
      r = m[dtype]
      dots = ", ".join(f"{k} {v}" for k, v in sorted(r["matmul_dtypes"].items()))
      out.append([model, dtype, fmt(m["batch"]), shape, fmt(r["step_ms"]),
                  f"{fmt(r[m['unit'] + '_per_s'])} {m['unit']}/s", fmt(r["achieved_tflops"]),
                  fmt(r["mfu"]), fmt(m["bf16_speedup"]) if dtype == "bfloat16" else "",
                  dots, fmt(r["compile_s"])])
  return out


def rows_gramian(sec):
  out = []
  for t, row in sec["rows"].items():
    for name in ("ew", "upgrad_leaf", "upgrad_rows"):
      r = row[name]
      out.append([t.split("=")[1], name, fmt(r["step_ms"]), fmt(r.get("time_over_ew", 1.0)),
                  fmt(r.get("temp_memory_over_ew", 1.0 if name == "ew" else None)),
                  fmt(r.get("peak_memory_over_ew", 1.0 if name == "ew" else None))])
  return out


def rows_sharding(sec):
  return [[name, "x".join(str(v) for v in r["mesh"].values()), fmt(r["step_ms"]),
           fmt(r["time_over_replicated"]), fmt(r["param_bytes_device0"])]
          for name, r in sec["rows"].items()]


def rows_streaming(sec):
  return [[name, fmt(r["input_examples_per_s"]), fmt(r["step_consumes_examples_per_s"]),
           fmt(r["step_ms_fixed_batch"]), fmt(r["step_ms_with_prefetching_feed"]),
           fmt(r["loop_overhead"])] for name, r in sec["rows"].items()]


def markdown(result) -> str:
  lines = []
  for name, header in HEADERS.items():
    lines.append(f"### {TITLES[name]}")
    lines.append("")
    sec = result.get(name)
    if name == "environment":
      lines += _table(header, rows_environment(sec or {}, result))
    elif sec is None:
      lines.append("(not run)")
    elif "error" in sec:
      lines.append(f"(failed: {sec['error']})")
    elif "rows" not in sec and "models" not in sec:
      lines.append(f"(skipped: {sec.get('skipped')})")
    else:
      lines += _table(header, globals()[f"rows_{name}"](sec))
      for what, why in (sec.get("skipped") or {}).items():
        lines.append(f"\n{what} skipped: {why}")
    lines.append("")
  if "section_s" in result:
    lines.append("Seconds per section: " + ", ".join(
        f"{k} {v}" for k, v in result["section_s"].items()) + f"; total {result.get('total_s')}.")
  return "\n".join(lines) + "\n"


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if len(argv) != 1:
    raise SystemExit("usage: device_table.py DEVICE_SUITE_JSON")
  with open(argv[0]) as f:
    sys.stdout.write(markdown(json.load(f)))


if __name__ == "__main__":
  main()
