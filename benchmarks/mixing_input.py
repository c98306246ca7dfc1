"""The mixing input path next to the step that consumes it, and what the masked format costs.

1. Input: examples/s of the host side of ``TrainFeed`` (sampling and
   gathering, ``batch_prep_ms``; plus the transfer, ``batch_prep_and_put_ms``)
   over four MNIST-1D datasets (3,500 to 100 train examples, one task each)
   with mixed batches and with one dataset per batch, and the one-dataset
   ``TrainIterator`` as the baseline, next to the quickstart-size step's
   consumption (steps/s x batch). ``loop_overhead`` is (feed + step loop) /
   (step loop on a fixed batch) - 1, measured side by side: the time the
   step waits on input; ``loop_overhead_prefetch`` the same with batches
   prepared two ahead in a thread (``config.prefetch_batches=2``).
2. Masked format: with one dataset per task (one labelled task per example,
   School-like), every head still runs on every example. The library's own
   train step with every head masked vs ``model.route_heads=True`` (each
   example through its own head, mtl_jax/routing.py), for T = 8 and 139 tasks,
   heads of 1 output (regression) and 10 (classification), and 139 heads with
   a 64-wide hidden layer. Both give the same task losses (checked); the
   paired ratio masked / routed is the waste that routing removes.

Prints one JSON object on stdout.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402


def _mix_config(batches, batch_size, features):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.datasets = [dict(name="mnist1d", alias="a", tasks=["digit"]),
                dict(name="mnist1d", alias="b", tasks=["digit_ge5"], train_per_class=100),
                dict(name="mnist1d", alias="c", tasks=["parity"], train_per_class=10),
                dict(name="mnist1d", alias="d", tasks={"digit_shuf": "digit"},
                     shuffle_spatial=True, train_per_class=50)]
  c.tasks = [dict(name="digit", kind="multiclass", num_outputs=10), dict(name="digit_ge5",
             kind="binary"), dict(name="parity", kind="binary"),
             dict(name="digit_shuf", kind="multiclass", num_outputs=10)]
  c.mixing = dict(sampling="temperature", temperature=2.0, batches=batches)
  if batches == "one_dataset":  # the baseline: config.data, the plain TrainIterator
    c.data = dict(name="mnist1d")
    c.tasks = c.tasks[:3]
    del c["datasets"], c["mixing"]
  c.model = dict(sharing="hard", trunk=dict(name="mlp", features=features))
  c.optimizer = dict(name="adam", learning_rate=1e-3, schedule="constant")
  c.batch_size = batch_size
  c.num_train_steps = 100000
  c.checkpoint_every_steps = 0
  c.progress_bar = False
  return c


def input_path(batches, batch_size, features, n):
  from mtl_jax.run import setup
  with tempfile.TemporaryDirectory() as tmp:
    run = setup(_mix_config(batches, batch_size, features), tmp)
    feed, mesh = run.feed, run.mesh
    host_s = common.host_batch_seconds(feed, n)
    t0 = time.perf_counter()
    for _ in range(n):
      common.block(feed.next(mesh))
    put_s = (time.perf_counter() - t0) / n
    timer = common.FedStep(run)
    samples = [(timer.seconds(n), timer.seconds(n, feed)) for _ in range(3)]
    step_s = float(np.median([a for a, _ in samples]))
    loop_s = float(np.median([b for _, b in samples]))
    stats = feed.stats()
    # The same loop with batches prepared ahead in a thread (TrainFeed prefetch=2).
    feed = feed.restarted(prefetch=2)
    pre = []
    for _ in range(3):
      timer.seconds(n)
      pre.append(timer.seconds(n, feed))
    feed.close()
    prefetch_s = float(np.median(pre))
  return {"batch_prep_ms": round(1e3 * host_s, 4), "batch_prep_and_put_ms": round(1e3 * put_s, 4),
          "input_examples_per_s": round(batch_size / host_s),
          "step_ms_fixed_batch": round(1e3 * step_s, 4),
          "step_consumes_examples_per_s": round(batch_size / step_s),
          "input_over_consumption": round(step_s / host_s, 2),
          "step_ms_with_feed": round(1e3 * loop_s, 4),
          "loop_overhead": round(loop_s / step_s - 1, 4),
          "step_ms_with_prefetching_feed": round(1e3 * prefetch_s, 4),
          "loop_overhead_prefetch": round(prefetch_s / step_s - 1, 4),
          "epochs_seen": {k.split("/")[1]: round(v, 2) for k, v in stats.items()
                          if k.endswith("epochs")}}


def masked_vs_routed(num_tasks, outputs, batch, features, input_dim, hidden, repeats, steps):
  """The library's train step (Adam, equal weighting) in the masked format and with
  ``model.route_heads`` on one batch where each example labels one task (School-like)."""
  kind = dict(kind="regression") if outputs == 1 else dict(kind="multiclass",
                                                            num_outputs=outputs)
  task_list = [dict(name=f"t{i}", **kind) for i in range(num_tasks)]
  built, timers = {}, {}
  for name, route in (("masked", False), ("routed", True)):
    config = {"tasks": task_list,
              "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": tuple(features)},
                        "head_hidden": tuple(hidden), "route_heads": route},
              "optimizer": {"name": "adam", "learning_rate": 1e-3},
              "batch_size": batch, "input_shape": (input_dim,)}
    built[name] = common.build(config, host_init=True)
  b = common.random_batch(built["masked"].specs, batch, (input_dim,), seed=1, label_frac=1.0)
  own = np.random.RandomState(2).randint(0, num_tasks, batch)
  b["mask"] = {f"t{i}": jnp.asarray(own == i) for i in range(num_tasks)}
  first = {}
  for name, bt in built.items():  # one step of each compiled program: the same task losses
    tm = timers[name] = common.StepTimer(bt, b)
    tm.state, metrics = tm.compiled(tm.state, b)
    first[name] = np.asarray(metrics["task_loss"])
  if not np.allclose(first["masked"], first["routed"], rtol=1e-4, atol=1e-6):
    raise AssertionError(f"masked and routed task losses differ: {first}")
  times = common.time_interleaved(timers, repeats, steps)
  s = {k: v["samples_ms"] for k, v in times.items()}
  dims = (input_dim,) + tuple(features)
  head_in = dims[-1]
  head_flops = batch * num_tasks * sum(a * c for a, c in zip((head_in,) + tuple(hidden),
                                                             tuple(hidden) + (outputs,)))
  trunk_flops = batch * sum(a * c for a, c in zip(dims[:-1], dims[1:]))
  return {"masked_step_ms": round(times["masked"]["median_ms"], 4),
          "routed_step_ms": round(times["routed"]["median_ms"], 4),
          "masked_over_routed": round(common.paired_ratio(s["masked"], s["routed"]), 3),
          "masked_head_flops_over_trunk_flops": round(head_flops / trunk_flops, 3),
          "first_step_task_loss_max_abs_diff": float(np.max(np.abs(first["masked"]
                                                                    - first["routed"])))}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
  args = p.parse_args(argv)
  features = (32, 32) if args.quick else (256, 256)
  batch = 32 if args.quick else 128
  n = 10 if args.quick else 200
  out = {"benchmark": "mixing_input",
         "config": {"trunk": list(features), "batch_size": batch, "datasets": 4,
                    "quick": args.quick, "input_batches": n}}
  out["input"] = {}
  for batches in (("mixed",) if args.quick else ("one_dataset", "mixed", "per_dataset")):
    out["input"][batches] = input_path(batches, batch, features, n)
    common.log(batches, out["input"][batches])
  out["masked_format"] = {}
  cases = ([(8, 10, ())] if args.quick else
           [(8, 1, ()), (8, 10, ()), (139, 1, ()), (139, 10, ()), (139, 1, (64,))])
  for t, o, hidden in cases:
    key = f"T{t}_outputs{o}" + (f"_hidden{'x'.join(map(str, hidden))}" if hidden else "")
    out["masked_format"][key] = masked_vs_routed(
        t, o, batch, features, 40, hidden, 3 if args.quick else 9, 3 if args.quick else 30)
    common.log(key, out["masked_format"][key])
  out["host_input_faster_than_step"] = all(v["input_over_consumption"] > 1
                                           for v in out["input"].values())
  out["environment"] = common.environment()
  common.emit(out)


if __name__ == "__main__":
  main()
