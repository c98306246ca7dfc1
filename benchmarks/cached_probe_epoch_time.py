"""cached_probe vs linear_probe time per epoch, and frozen-trunk vs full fine-tune step
time, in one run on a compute-heavy trunk.

Three ways to train heads on N examples, each an epoch of N / B steps driven as
train.py drives them (TrainIterator batches, ``parallel.shard_batch`` host->device
transfer, the jitted step with donated state):

* ``full_finetune``: every parameter trained (``param_groups = [(".*", 1.0)]``).
* ``linear_probe``: trunk frozen (``[("trunk/.*", None), (".*", 1.0)]``): the step
  still runs the trunk's forward pass on every batch.
* ``cached_probe``: the trunk's features computed once (``transfer.trunk_features``),
  then a head-only model (identity trunk) trained on them. The one-time extraction
  is reported separately, with the number of epochs after which it has paid off.

Targets on CPU: epoch(linear_probe) / epoch(cached_probe) >= 20;
step(frozen) / step(full) <= 0.4 (the linear_probe and full_finetune epochs).

Prints one JSON object on stdout:
  {"benchmark", "config", "epoch_time_ms": {...}, "step_time_ms": {...}, "cache": {...},
   "ratio_linear_over_cached", "ratio_frozen_over_full", "targets", "target_met",
   "compile_s", "xla_cost", ...}
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import jax  # noqa: E402

from mtl_jax import parallel, transfer  # noqa: E402
from mtl_jax.data.base import ArrayDataset  # noqa: E402
from mtl_jax.data.pipeline import TrainIterator  # noqa: E402

TARGET_CACHED = 20.0   # epoch(linear_probe) / epoch(cached_probe) >=
TARGET_FROZEN = 0.4    # step(frozen) / step(full) <=
RULES = {"full_finetune": [(".*", 1.0)],
         "linear_probe": [("trunk/.*", None), (".*", 1.0)],
         "cached_probe": [(".*", 1.0)]}


class EpochTimer:
  """One compiled train step fed epoch by epoch from a dataset, as train.py feeds it."""

  def __init__(self, built: common.Built, dataset: ArrayDataset, mesh, seed: int = 0):
    rep, dat = parallel.replicated(mesh), parallel.data_sharding(mesh)
    self.mesh, self.batch_size = mesh, built.batch_size
    self.steps = len(dataset) // built.batch_size
    self.iter = TrainIterator(dataset, built.batch_size, seed)
    jitted = jax.jit(built.step_fn, in_shardings=(rep, dat), out_shardings=(rep, rep),
                     donate_argnums=0)
    sample = parallel.shard_batch(dataset.take(list(range(built.batch_size))), mesh)
    t0 = time.perf_counter()
    self.compiled = jitted.lower(built.state, sample).compile()
    self.compile_s = time.perf_counter() - t0
    self.state = jax.device_put(jax.device_get(built.state), rep)

  def run(self, epochs: int) -> float:
    """Runs ``epochs`` epochs (N / B steps each); returns seconds per epoch."""
    state, metrics = self.state, None
    common.block(state)
    t0 = time.perf_counter()
    for _ in range(epochs * self.steps):
      batch = parallel.shard_batch(next(self.iter), self.mesh)
      state, metrics = self.compiled(state, batch)
    common.block((state, metrics))
    dt = time.perf_counter() - t0
    self.state = state
    return dt / epochs

  def cost(self):
    return common.StepTimer.cost(self)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
  p.add_argument("--repeat-s", type=float, default=0.3,
                 help="minimum seconds of work per method per repeat (whole epochs)")
  p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
  p.add_argument("--num-examples", type=int, default=0, help="N (default 4096; quick 256)")
  p.add_argument("--batch-size", type=int, default=0, help="B (default 256; quick 32)")
  p.add_argument("--width", type=int, default=2048, help="trunk width (4 Dense blocks)")
  args = p.parse_args(argv)

  if args.quick:
    input_shape, trunk, n, batch = (40,), {"name": "mlp", "features": (64, 64)}, 256, 32
    repeats = min(args.repeats, 3)
  else:  # MNIST-1D-shaped inputs, the wide MLP of frozen_trunk_step_time
    input_shape, n, batch = (40,), 4096, 256
    trunk = {"name": "mlp", "features": (args.width,) * 4}
    repeats = args.repeats
  n, batch = args.num_examples or n, args.batch_size or batch
  if n % batch:
    raise SystemExit(f"--num-examples {n} must be a multiple of --batch-size {batch}")
  tasks = [{"name": "b0", "kind": "binary"}, {"name": "c0", "kind": "multiclass", "num_outputs": 10}]
  mesh = parallel.make_mesh(1)

  def config(name, trunk_cfg, shape):
    return {"tasks": tasks, "model": {"sharing": "hard", "trunk": trunk_cfg},
            "optimizer": {"name": "adam", "learning_rate": 1e-3}, "param_groups": RULES[name],
            "batch_size": batch, "input_shape": shape}

  built = {name: common.build(config(name, trunk, input_shape), host_init=args.quick)
           for name in ("full_finetune", "linear_probe")}
  data = jax.device_get(common.random_batch(built["linear_probe"].specs, n, input_shape, seed=1))
  dataset = ArrayDataset(data["inputs"], data["labels"], data["mask"])

  # The one-time cost of cached_probe: the frozen trunk over every example, as
  # train_and_evaluate runs it (a fresh jit, so compile included), then once more.
  trunk_params = jax.device_get(built["linear_probe"].state.params["trunk"])
  t0 = time.perf_counter()
  feats = transfer.trunk_features(trunk, trunk_params, dataset.inputs)
  cache_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  transfer.trunk_features(trunk, trunk_params, dataset.inputs)
  cache_again_s = time.perf_counter() - t0
  common.log(f"cache: {feats.shape} features in {cache_s:.3f}s (again: {cache_again_s:.3f}s)")
  cached = ArrayDataset(feats, dataset.labels, dataset.mask)
  built["cached_probe"] = common.build(config("cached_probe", {"name": "identity"}, feats.shape[1:]),
                                       host_init=args.quick)

  timers, info = {}, {}
  for name in ("full_finetune", "linear_probe", "cached_probe"):
    b = built[name]
    timers[name] = EpochTimer(b, cached if name == "cached_probe" else dataset, mesh)
    info[name] = {"params": b.num_params(), "trainable_params": b.num_params(trainable_only=True),
                  **timers[name].cost()}
    common.log(f"{name}: compiled in {timers[name].compile_s:.2f}s, {info[name]}")

  first = {name: t.run(1) for name, t in timers.items()}  # warm-up; sizes the repeats
  epochs = {name: 1 if args.quick else max(1, round(args.repeat_s / max(s, 1e-6)))
            for name, s in first.items()}
  times = common.time_interleaved_each(timers, repeats, epochs, warmup=0)
  steps = timers["linear_probe"].steps
  for name, v in times.items():
    common.log(f"{name}: {v['median_ms']:.2f} ms/epoch ({v['median_ms'] / steps:.3f} ms/step)")

  ep = {k: v["median_ms"] for k, v in times.items()}
  s = {k: v["samples_ms"] for k, v in times.items()}
  r_cached = common.ratio(ep["linear_probe"], ep["cached_probe"])
  r_frozen = common.ratio(ep["linear_probe"], ep["full_finetune"])
  saved_s = (ep["linear_probe"] - ep["cached_probe"]) / 1e3
  cached_ok, frozen_ok = bool(r_cached >= TARGET_CACHED), bool(r_frozen <= TARGET_FROZEN)
  common.emit({
      "benchmark": "cached_probe_epoch_time",
      "config": {"trunk": {k: list(v) if isinstance(v, tuple) else v for k, v in trunk.items()},
                 "input_shape": list(input_shape), "num_examples": n, "batch_size": batch,
                 "steps_per_epoch": steps, "num_tasks": len(tasks), "optimizer": "adam",
                 "param_groups": {k: [list(r) for r in v] for k, v in RULES.items()},
                 "repeats": repeats, "epochs_per_repeat": epochs, "quick": args.quick},
      "epoch_time_ms": {k: round(v, 4) for k, v in ep.items()},
      "epoch_time_min_ms": {k: round(v["min_ms"], 4) for k, v in times.items()},
      "step_time_ms": {k: round(v / steps, 4) for k, v in ep.items()},
      "samples_ms": s,
      "cache": {"feature_shape": list(feats.shape),
                "feature_extraction_s": round(cache_s, 4),
                "feature_extraction_again_s": round(cache_again_s, 4),
                "in_linear_probe_epochs": round(cache_s * 1e3 / ep["linear_probe"], 3),
                "break_even_epochs": round(cache_s / saved_s, 3) if saved_s > 0 else None},
      "ratio_linear_over_cached": round(r_cached, 4),
      "ratio_linear_over_cached_paired": round(common.paired_ratio(s["linear_probe"],
                                                                   s["cached_probe"]), 4),
      "ratio_frozen_over_full": round(r_frozen, 4),
      "ratio_frozen_over_full_paired": round(common.paired_ratio(s["linear_probe"],
                                                                 s["full_finetune"]), 4),
      "targets": {"linear_over_cached": {"target": f">= {TARGET_CACHED:g}", "met": cached_ok},
                  "frozen_over_full": {"target": f"<= {TARGET_FROZEN:g}", "met": frozen_ok}},
      "target_met": cached_ok and frozen_ok,
      "compile_s": {k: round(t.compile_s, 4) for k, t in timers.items()},
      "xla_cost": info,
      "environment": common.environment(),
  })


if __name__ == "__main__":
  main()
