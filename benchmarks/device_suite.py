"""The accelerator check: matmul peak, train-step throughput and MFU, the Gramian path,
parameter sharding and the streaming input, in one process, one JSON object out.

Sections (each a key of the JSON, with the shapes, dtypes and steps it timed):

* ``peak``: square matmuls on random data (jitted, warm, timed with
  ``block_until_ready``), TFLOP/s per dtype at the default matmul precision
  (what the train steps use: TF32 for float32 on recent NVIDIA GPUs) and
  float32 at ``Precision.HIGHEST``; the peak of a dtype is its best size.
* ``train_step``: the library's own step (``common.build`` ->
  ``mtl_jax.run.build_program``) for the MLP, ResNet-18, ViT-Ti and a
  MiniLM-sized BERT encoder with four mixed task heads, in float32 and
  bfloat16 (``config.model.dtype``), timed interleaved: step ms,
  images/s or tokens/s, and MFU = XLA's FLOP count of the compiled step
  (``compiled.cost_analysis()["flops"]``) / step time / the measured peak of
  the same dtype. ``matmul_dtypes`` counts the dot/convolution operand
  dtypes in the lowered program (proof that bfloat16 ran in bfloat16).
* ``gramian``: per-task gradients on the Gramian path (UPGrad, default
  ``leaf`` engine and ``rows``) against the equally weighted step (EW) at
  T = 8 and 32: step time and XLA's memory (``compiled.memory_analysis()``)
  over EW's.
* ``sharding``: ``config.sharding`` = fsdp / tensor_parallel against
  replicated parameters on the devices present (skipped, with the reason,
  on one device).
* ``streaming``: ``input_throughput.measure`` on PNG array_record images
  with 0 and 2 grain workers: host examples/s and what the step consumes.

Run on an accelerator: ``bash benchmarks/device_suite.sh`` (docs/performance.md);
``benchmarks/device_table.py`` prints the markdown tables from the JSON.
``--smoke`` runs every section on CPU with tiny shapes (and two simulated
CPU devices, so sharding runs): tests/test_device_suite_smoke.py. A section
that fails records its error, the others still run, and the exit status is 1.
"""

import argparse
import gc
import json
import os
import re
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import common  # noqa: E402
import encoder_step_time  # noqa: E402

SECTIONS = ("peak", "train_step", "gramian", "sharding", "streaming")
DTYPES = ("float32", "bfloat16")
FLOP_COUNT = ("XLA compiled.cost_analysis()['flops'] of the whole jitted train step "
              "(forward, backward, weighting, optimizer update; elementwise ops included)")

FULL = {
    "peak": {"sizes": (4096, 8192, 16384), "iters": 10, "repeats": 5},
    "models": {
        "mlp": {"trunk": {"name": "mlp", "features": (4096, 4096, 4096)},
                "input_shape": (1024,), "batch": 4096},
        "resnet18": {"trunk": {"name": "resnet", "features": (64, 128, 256, 512),
                               "units_per_stage": (2, 2, 2, 2), "stem": "imagenet"},
                     "input_shape": (224, 224, 3), "batch": 128},
        "vit_ti": {"trunk": {"name": "vit", "patch_size": 16, "hidden_size": 192,
                             "num_layers": 12, "num_heads": 3, "mlp_dim": 768},
                   "input_shape": (224, 224, 3), "batch": 256},
        "bert_minilm": {"trunk": {"name": "bert", **encoder_step_time.MINILM, "dropout": 0.1,
                                  "pooling": "cls", "pooler": False},
                        "seq_len": 128, "batch": 64},
    },
    "tasks": common.mixed_tasks(4),
    "train": {"repeats": 5, "target_s": 0.5},
    "gramian": {"input_dim": 1024, "trunk": (2048, 2048, 2048), "batch": 512,
                "num_tasks": (8, 32), "repeats": 5, "target_s": 0.5},
    "sharding": {"width": 4096, "batch": 1024, "repeats": 5, "target_s": 0.5},
    "streaming": {"images": 4096, "batch": 256, "steps": 40, "workers": (0, 2)},
}
SMOKE = {
    "peak": {"sizes": (64, 128), "iters": 2, "repeats": 2},
    "models": {
        "mlp": {"trunk": {"name": "mlp", "features": (16,)}, "input_shape": (8,), "batch": 8},
        "resnet18": {"trunk": {"name": "resnet", "features": (4, 8),
                               "units_per_stage": (1, 1), "stem": "cifar",
                               "stem_features": 4, "norm_groups": 2},
                     "input_shape": (8, 8, 3), "batch": 4},
        "vit_ti": {"trunk": {"name": "vit", "patch_size": 4, "hidden_size": 8, "num_layers": 1,
                             "num_heads": 2, "mlp_dim": 16},
                   "input_shape": (8, 8, 3), "batch": 4},
        "bert_minilm": {"trunk": {"name": "bert", **encoder_step_time.QUICK, "num_layers": 1,
                                  "dropout": 0.1, "pooling": "cls", "pooler": False},
                        "seq_len": 8, "batch": 4},
    },
    "tasks": common.binary_tasks(2),  # one stacked group: the compile time is per kind
    "train": {"repeats": 2, "target_s": 0.0},
    "gramian": {"input_dim": 8, "trunk": (16,), "batch": 8, "num_tasks": (2,), "repeats": 2,
                "target_s": 0.0},
    "sharding": {"width": 16, "batch": 8, "repeats": 2, "target_s": 0.0},
    # No worker processes: each spawn re-imports the library (seconds on a CI core); the
    # worker count is only passed through to StreamingDataset (tests/test_streaming.py).
    "streaming": {"images": 64, "batch": 16, "steps": 2, "workers": (0,)},
}


def optimizer():
  return {"name": "adam", "learning_rate": 1e-3}


# ------------------------------------------------------------------------ peak


class Matmul:
  """One jitted n x n x n matmul on random data; ``run(k)`` -> seconds per product."""

  def __init__(self, n, dtype, precision=None):
    import jax
    import jax.numpy as jnp
    ka, kb = jax.random.split(jax.random.key(n))
    self.a = jax.random.normal(ka, (n, n), dtype)
    self.b = jax.random.normal(kb, (n, n), dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, precision=precision))
    self.compiled = f.lower(self.a, self.b).compile()
    self.flops = 2.0 * n ** 3

  def run(self, k):
    t0 = time.perf_counter()
    for _ in range(k):
      out = self.compiled(self.a, self.b)
    out.block_until_ready()
    return (time.perf_counter() - t0) / k


def section_peak(sz):
  import jax
  import jax.numpy as jnp
  variants = {"float32": (jnp.float32, None), "bfloat16": (jnp.bfloat16, None),
              "float32_highest": (jnp.float32, jax.lax.Precision.HIGHEST)}
  runners = {f"{name}/{n}": Matmul(n, dt, prec) for name, (dt, prec) in variants.items()
             for n in sz["sizes"]}
  times = common.time_interleaved_each(runners, sz["repeats"],
                                       {k: sz["iters"] for k in runners}, warmup=1)
  rows, peak = {}, {}
  for key, t in times.items():
    name, n = key.split("/")
    flops = runners[key].flops
    rows[key] = {"dtype": name, "n": int(n), "ms": t["median_ms"],
                 "tflops_median": flops / t["median_ms"] / 1e9,
                 "tflops_best": flops / t["min_ms"] / 1e9}
    peak[name] = max(peak.get(name, 0.0), rows[key]["tflops_best"])
  return {"config": {**sz, "products_per_repeat": sz["iters"],
                     "precision": "default (float32_highest: lax.Precision.HIGHEST)",
                     "data": "jax.random.normal"},
          "peak_tflops": peak, "rows": rows}


# ------------------------------------------------------------------ train step


def matmul_dtypes(lowered):
  """{"bf16": n, "f32": m}: operand element types of the dots and convolutions in the
  lowered (StableHLO) program."""
  counts = {}
  for line in lowered.as_text().splitlines():
    m = re.search(r"stablehlo\.(dot_general|convolution)\b.*:\s*\(tensor<([^>]*)>", line)
    if m:
      dt = m.group(2).split("x")[-1]
      counts[dt] = counts.get(dt, 0) + 1
  return counts


def model_config(spec, dtype, task_list):
  trunk = dict(spec["trunk"])
  if trunk["name"] == "bert":  # the BERT trunk computes in its own dtype field
    trunk["dtype"] = dtype
  shape = (spec["seq_len"],) if "seq_len" in spec else spec["input_shape"]
  return {"tasks": task_list, "model": {"sharing": "hard", "trunk": trunk,
                                                    "dtype": dtype},
          "optimizer": optimizer(), "batch_size": spec["batch"], "input_shape": shape}


def token_inputs(spec, batch):
  """BERT inputs: random ids with ~25% right padding (encoder_step_time's batch)."""
  size = {"vocab_size": spec["trunk"]["vocab_size"]}
  return encoder_step_time.make_batch(size, batch, spec["seq_len"], 2)[0]


def model_batch(built, spec):
  """A random masked batch (token inputs for BERT)."""
  batch = common.random_batch(built.specs, spec["batch"], built.input_shape)
  if "seq_len" in spec:
    import jax
    batch["inputs"] = jax.device_put(token_inputs(spec, spec["batch"]))
  return batch


def time_pair(timers, sz):
  counts = {n: common.steps_for(t, sz["target_s"]) if sz["target_s"] else 1
            for n, t in timers.items()}
  return common.time_interleaved_each(timers, sz["repeats"], counts, warmup=1), counts


def section_train_step(sz, peak):
  out = {"flop_count": FLOP_COUNT, "peak_used": "peak.peak_tflops of the same dtype",
         "tasks": sz["tasks"], "optimizer": optimizer(), "models": {}}
  for model, spec in sz["models"].items():
    timers, info = {}, {}
    for dtype in DTYPES:
      config = model_config(spec, dtype, sz["tasks"])
      sample = token_inputs(spec, 1) if "seq_len" in spec else None
      built = common.build(config, host_init=True, sample=sample)
      timer = timers[dtype] = common.StepTimer(built, model_batch(built, spec))
      cost = timer.cost()
      info[dtype] = {"params": built.num_params(), "compile_s": round(timer.compile_s, 2),
                     "flops_per_step": cost.get("flops"),
                     "flops_per_step_lowered": _lowered_flops(timer.lowered),
                     "matmul_dtypes": matmul_dtypes(timer.lowered),
                     "memory_bytes": common.memory_stats(timer.compiled)}
      common.log(f"train_step {model} {dtype}: compiled in {timer.compile_s:.1f} s")
    times, counts = time_pair(timers, sz["train"])
    unit, per_step = (("tokens", spec["batch"] * spec["seq_len"]) if "seq_len" in spec
                      else ("images" if len(spec["input_shape"]) > 1 else "examples",
                            spec["batch"]))
    rows = {}
    for dtype in DTYPES:
      s = times[dtype]["median_ms"] / 1e3
      flops = info[dtype]["flops_per_step"]
      achieved = flops / s / 1e12 if flops else None
      mfu = achieved / peak[dtype] if achieved and peak.get(dtype) else None
      rows[dtype] = {**info[dtype], "step_ms": 1e3 * s, "step_ms_best": times[dtype]["min_ms"],
                     f"{unit}_per_s": per_step / s,
                     "achieved_tflops": achieved, "mfu": mfu,
                     "steps_per_repeat": counts[dtype], "repeats": sz["train"]["repeats"]}
    rows["bf16_speedup"] = common.paired_ratio(times["float32"]["samples_ms"],
                                               times["bfloat16"]["samples_ms"])
    shape = ({"seq_len": spec["seq_len"]} if "seq_len" in spec
             else {"input_shape": list(spec["input_shape"])})
    out["models"][model] = {"trunk": spec["trunk"], "batch": spec["batch"], **shape,
                            "unit": unit, "per_step": per_step, **rows}
    del timers
    gc.collect()
  return out


def _lowered_flops(lowered):
  """The FLOP count of the program before XLA's optimizations (a cross-check)."""
  try:
    ca = lowered.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca["flops"])
  except Exception:  # noqa: BLE001 -- optional diagnostics
    return None


# --------------------------------------------------------------------- gramian


def section_gramian(sz):
  import jax
  methods = {"ew": None,
             "upgrad_leaf": {"aggregator": "upgrad", "mode": "gramian"},
             "upgrad_rows": {"aggregator": "upgrad", "mode": "gramian",
                             "gramian_engine": "rows"}}
  out = {"config": {"input_dim": sz["input_dim"], "trunk": list(sz["trunk"]),
                    "batch": sz["batch"], "tasks": "linear regression heads",
                    "per_task_grads_backend": jax.default_backend(),
                    "memory": "compiled.memory_analysis(); temp = scratch, total = "
                              "argument + output - alias + temp"}, "rows": {}}
  for t in sz["num_tasks"]:
    config = {"tasks": [{"name": f"t{i}", "kind": "regression"} for i in range(t)],
              "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": sz["trunk"]}},
              "optimizer": optimizer(), "batch_size": sz["batch"],
              "input_shape": (sz["input_dim"],)}
    base = common.build(config, host_init=True)
    batch = common.random_batch(base.specs, sz["batch"], base.input_shape, seed=t)
    timers = {n: common.StepTimer(common.with_weighting(base, w), batch)
              for n, w in methods.items()}
    mem = {n: common.memory_stats(tm.compiled) for n, tm in timers.items()}
    times, counts = time_pair(timers, sz)
    s = {n: v["samples_ms"] for n, v in times.items()}
    row = {"params": base.num_params(), "steps_per_repeat": counts, "repeats": sz["repeats"]}
    for n in timers:
      row[n] = {"step_ms": times[n]["median_ms"], "memory_bytes": mem[n]}
      if n != "ew":
        row[n]["time_over_ew"] = common.paired_ratio(s[n], s["ew"])
        for k in ("temp", "total", "peak"):
          if mem["ew"].get(k):
            row[n][f"{k}_memory_over_ew"] = common.ratio(mem[n][k], mem["ew"][k])
    out["rows"][f"T={t}"] = row
    common.log(f"gramian T={t}: step ms {({n: round(row[n]['step_ms'], 3) for n in timers})}")
    del timers
    gc.collect()
  return out


# -------------------------------------------------------------------- sharding


def section_sharding(sz):
  import jax
  from mtl_jax import parallel, sharding
  from mtl_jax.run import build_program
  import numpy as np
  n = jax.device_count()
  if n < 2:
    return {"skipped": f"one device ({jax.devices()[0].device_kind}): FSDP and tensor "
                       f"parallel need two or more"}
  width, batch = sz["width"], sz["batch"]
  config = {"tasks": common.binary_tasks(8),
            "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": (width, width)}},
            "optimizer": optimizer(), "batch_size": batch, "input_shape": (width,)}
  layouts = {"replicated": 1, "fsdp": 1}
  skipped = {}
  if n % 2 == 0:
    layouts["tensor_parallel"] = 2
  else:
    skipped["tensor_parallel"] = f"{n} devices: a model axis of 2 does not divide them"
  timers, per_device, data = {}, {}, None
  for name, model in layouts.items():
    mesh = parallel.make_mesh(None, model)
    cfg = common._config_dict(config, 0)  # noqa: SLF001 -- the benchmarks' config helper
    cfg.sharding = name
    program = build_program(cfg, np.zeros((1, width), np.float32), mesh)
    built = common.Built(program, (width,), batch, config)
    data = data or common.random_batch(built.specs, batch, (width,))
    timers[name] = common.StepTimer(built, data, mesh=mesh)
    per_device[name] = {"mesh": dict(mesh.shape),
                        "param_bytes_device0": sharding.per_device_bytes(program.state.params)}
  times, counts = time_pair(timers, sz)
  s = {k: v["samples_ms"] for k, v in times.items()}
  rows = {k: {**per_device[k], "step_ms": times[k]["median_ms"],
              "time_over_replicated": common.paired_ratio(s[k], s["replicated"])}
          for k in timers}
  return {"config": {"devices": n, "width": width, "batch": batch, "tasks": 8,
                     "steps_per_repeat": counts, "repeats": sz["repeats"]},
          "rows": rows, "skipped": skipped}


# ------------------------------------------------------------------- streaming


def section_streaming(sz):
  import input_throughput
  # Grain workers only decode (NumPy); keep any JAX they import off the accelerator.
  saved = os.environ.get("JAX_PLATFORMS")
  os.environ["JAX_PLATFORMS"] = "cpu"
  try:
    with tempfile.TemporaryDirectory() as d:
      data = input_throughput._write_images(d, sz["images"])  # noqa: SLF001 -- its writer
      rows = input_throughput.measure("image", data, sz["batch"], sz["steps"],
                                      list(sz["workers"]))
  finally:
    if saved is None:
      os.environ.pop("JAX_PLATFORMS")
    else:
      os.environ["JAX_PLATFORMS"] = saved
  return {"config": {**sz, "data": "28x28 grey PNG array_record, LeNet, 10 classes",
                     "steps_timed": sz["steps"]}, "rows": rows}


# ------------------------------------------------------------------------ main


def environment():
  import jax
  import jaxlib
  d = jax.devices()[0]
  return {**common.environment(), "jaxlib": jaxlib.__version__, "device_kind": d.device_kind,
          "device_count": jax.device_count(),
          "default_matmul_precision": str(jax.config.jax_default_matmul_precision),
          "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}


def write(path, result):
  if path:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(result, f, indent=2)
    os.replace(tmp, path)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU, every section")
  ap.add_argument("--sections", default=",".join(SECTIONS))
  ap.add_argument("--out", default="", help="also write the JSON here (after every section)")
  ap.add_argument("--budget-s", type=float, default=450.0,
                  help="skip the sections that would start after this many seconds")
  ap.add_argument("--cpu-devices", type=int, default=0,
                  help="simulated CPU devices (default: 2 with --smoke, else none)")
  args = ap.parse_args(argv)
  sections = args.sections.split(",")
  unknown = sorted(set(sections) - set(SECTIONS))
  if unknown:
    raise SystemExit(f"--sections: unknown {unknown}; valid: {list(SECTIONS)}")
  if "train_step" in sections and "peak" not in sections:
    sections.insert(0, "peak")  # MFU needs the peak
  cpu_devices = args.cpu_devices or (2 if args.smoke else 0)
  if cpu_devices:  # read when the CPU client starts, i.e. before the first JAX call
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={cpu_devices}").strip()
  sz = SMOKE if args.smoke else FULL
  t_start = time.perf_counter()
  result = {"benchmark": "device_suite", "smoke": args.smoke, "environment": environment(),
            "section_s": {}}
  failed = []
  for name in sections:
    if time.perf_counter() - t_start > args.budget_s:
      result[name] = {"skipped": f"time budget: {args.budget_s:.0f} s spent before it started"}
      continue
    t0 = time.perf_counter()
    common.log(f"--- {name}")
    try:
      if name == "peak":
        result[name] = section_peak(sz["peak"])
      elif name == "train_step":
        peak = result.get("peak", {}).get("peak_tflops", {})
        result[name] = section_train_step(sz, peak)
      else:
        result[name] = globals()[f"section_{name}"](sz[name])
    except Exception as e:  # noqa: BLE001 -- record it, run the other sections, exit 1
      traceback.print_exc()
      result[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
      failed.append(name)
    result["section_s"][name] = round(time.perf_counter() - t0, 1)
    result["total_s"] = round(time.perf_counter() - t_start, 1)
    write(args.out, result)
  common.emit(result)
  if failed:
    common.log(f"sections failed: {failed}")
    raise SystemExit(1)


if __name__ == "__main__":
  main()
