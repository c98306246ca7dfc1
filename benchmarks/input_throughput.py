"""The streaming input path (array_record + per-example decode, grain workers) against the step.

Two configs, each trained from array_record files written to a temp dir:
- ``mnist1d``: the quickstart model (MLP 256-256, batch 128) on MNIST-1D
  records (.npz per example: 40 floats, two tasks);
- ``image``: a LeNet trunk (batch 128) on 28x28 grey PNG images, 10 classes.

For 0, 1 and 2 grain workers: ``input_examples_per_s`` (host batches, read +
decode + stack, no step), the step's consumption on a fixed batch
(``step_consumes_examples_per_s``), and the step loop fed by the streaming
feed with ``prefetch_batches=2`` (``loop_overhead`` = fed loop / fixed-batch
loop - 1, measured side by side). ``step_waits_on_input``: overhead > 10%.
The in-memory ArrayDataset path is the reference row.

Prints one JSON object on stdout.
"""

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402


def _write_mnist1d(d, limit=None):
  from mtl_jax.data import build_dataset, streaming
  data = build_dataset({"name": "mnist1d", "hide_rate": 0.3})
  out = {}
  for split in ("train", "validation"):
    ds = getattr(data, split)
    out[split] = os.path.join(d, f"m1d_{split}.array_record")
    streaming.write_array_record(out[split], (
        jax.tree.map(lambda x: x[0], ds.take(np.array([i])))
        for i in range(min(len(ds), limit or len(ds)))))
  return dict(decoder="npz", **out)


def _write_images(d, limit=None):
  from mtl_jax.data import streaming
  rng = np.random.default_rng(0)
  out = {}
  for split, m in (("train", min(4096, limit or 4096)), ("validation", 256)):
    out[split] = os.path.join(d, f"img_{split}.array_record")
    streaming.write_array_record(out[split], (
        {"inputs": rng.integers(0, 256, (28, 28)).astype(np.uint8),
         "labels": {"cls": np.int32(i % 10)}, "mask": {"cls": np.bool_(True)}}
        for i in range(m)), streaming.encode_png)
  return dict(decoder="png", **out)


def _config(kind, data, batch):
  from configs import quickstart
  c = quickstart.get_config()
  c.data = dict(name="array_record", **data)
  c.batch_size = batch
  c.num_train_steps = 100000
  c.checkpoint_every_steps = 0
  c.eval_every_steps = 0
  c.progress_bar = False
  c.optimizer.schedule = "constant"
  if kind == "image":
    c.tasks = [dict(name="cls", kind="multiclass", num_outputs=10)]
    c.model = dict(sharing="hard", trunk=dict(name="lenet"))
  return c


def measure(kind, data, batch, n, workers_list):
  from mtl_jax.data import streaming
  from mtl_jax.data.feed import TrainFeed
  from mtl_jax.run import setup
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    run = setup(_config(kind, data, batch), tmp)
    mesh, seeds = run.mesh, run.program.replicas.seeds
    train = run.splits["train"]
    timer = common.FedStep(run)

    variants = [("in_memory", streaming.materialize(train))]
    variants += [(f"workers_{w}", streaming.StreamingDataset(
        train.source, train.decode, train.task_names, num_workers=w)) for w in workers_list]
    for name, ds in variants:
      # Warm-up: workers started (a spawned process imports jax) and warm.
      host_s = common.host_batch_seconds(TrainFeed(ds, batch, seeds), n, warmup=10)
      feed = TrainFeed(ds, batch, seeds, prefetch=2)
      feed.next(mesh)
      samples = [(timer.seconds(n), timer.seconds(n, feed)) for _ in range(3)]
      feed.close()
      step_s = float(np.median([a for a, _ in samples]))
      fed_s = float(np.median([b for _, b in samples]))
      rows[name] = {"input_examples_per_s": round(batch / host_s),
                    "step_ms_fixed_batch": round(1e3 * step_s, 3),
                    "step_consumes_examples_per_s": round(batch / step_s),
                    "input_over_consumption": round(step_s / host_s, 2),
                    "step_ms_with_prefetching_feed": round(1e3 * fed_s, 3),
                    "loop_overhead": round(fed_s / step_s - 1, 4),
                    "step_waits_on_input": bool(fed_s / step_s - 1 > 0.10)}
      common.log(kind, name, rows[name])
  return rows


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=40)
  ap.add_argument("--batch", type=int, default=128)
  ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  ap.add_argument("--max-examples", type=int, default=None,
                  help="examples written per split (default: all; caps a smoke run)")
  args = ap.parse_args()
  result = {"benchmark": "input_throughput", "env": common.environment(),
            "batch_size": args.batch, "steps": args.steps, "max_examples": args.max_examples}
  with tempfile.TemporaryDirectory() as d:
    limit = args.max_examples
    result["mnist1d"] = measure("mnist1d", _write_mnist1d(d, limit), args.batch, args.steps,
                                args.workers)
    result["image"] = measure("image", _write_images(d, limit), args.batch, args.steps,
                              args.workers)
  common.emit(result)


if __name__ == "__main__":
  main()
