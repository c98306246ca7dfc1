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
   School-like), every head still runs on every example. Pure-JAX SGD steps of
   the same MLP trunk and stacked heads, all heads masked vs only the labelled
   head per example (gathered), for T = 8 and 139 tasks and heads of 1 output
   (regression) and 10 (classification). Both compute the same loss
   (checked); the ratio is the waste.

Prints one JSON object on stdout.
"""

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
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


def masked_vs_labelled(num_tasks, outputs, batch, features, input_dim, repeats, steps):
  rs = np.random.RandomState(0)
  dims = (input_dim,) + tuple(features)
  params = {"trunk": [(rs.randn(a, b).astype(np.float32) / np.sqrt(a), np.zeros(b, np.float32))
                      for a, b in zip(dims[:-1], dims[1:])],
            "w": rs.randn(num_tasks, dims[-1], outputs).astype(np.float32) / np.sqrt(dims[-1]),
            "b": np.zeros((num_tasks, outputs), np.float32)}
  x = rs.randn(batch, input_dim).astype(np.float32)
  task = rs.randint(0, num_tasks, batch).astype(np.int32)
  y = (rs.randn(batch, 1).astype(np.float32) if outputs == 1
       else rs.randint(0, outputs, batch).astype(np.int32))

  def trunk(p, x):
    for w, b in p["trunk"]:
      x = jax.nn.relu(x @ w + b)
    return x

  def per_example(out, y):  # out [..., B, O]
    if outputs == 1:
      return (out[..., 0] - y[:, 0]) ** 2
    return -jnp.sum(jax.nn.one_hot(y, outputs) * jax.nn.log_softmax(out), -1)

  def masked(p, x, y, task):
    out = jnp.einsum("bf,tfo->tbo", trunk(p, x), p["w"]) + p["b"][:, None]   # every head
    mask = jax.nn.one_hot(task, num_tasks).T                                 # [T, B]
    return jnp.sum(mask * per_example(out, y)) / batch

  def labelled(p, x, y, task):
    out = jnp.einsum("bf,bfo->bo", trunk(p, x), p["w"][task]) + p["b"][task]  # own head only
    return jnp.mean(per_example(out, y))

  def make_step(loss):
    @jax.jit
    def step(p):
      value, g = jax.value_and_grad(loss)(p, x, y, task)
      return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), value
    return step

  fns = {"masked": make_step(masked), "labelled": make_step(labelled)}
  p0 = jax.device_put(params)
  v = {k: float(f(p0)[1]) for k, f in fns.items()}
  if not np.isclose(v["masked"], v["labelled"], rtol=1e-4):
    raise AssertionError(f"the two formats disagree on the loss: {v}")
  samples = {k: [] for k in fns}
  for r in range(repeats):
    for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
      p = p0
      t = time.perf_counter()
      for _ in range(steps):
        p, val = fns[k](p)
      common.block(val)
      samples[k].append((time.perf_counter() - t) / steps)
  med = {k: float(np.median(s)) for k, s in samples.items()}
  head_flops = batch * dims[-1] * outputs * num_tasks
  trunk_flops = batch * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
  return {"masked_step_ms": round(1e3 * med["masked"], 4),
          "labelled_step_ms": round(1e3 * med["labelled"], 4),
          "masked_over_labelled": round(med["masked"] / med["labelled"], 3),
          "masked_head_flops_over_trunk_flops": round(head_flops / trunk_flops, 3),
          "loss_masked": v["masked"], "loss_labelled": v["labelled"]}


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
  for t in ((8,) if args.quick else (8, 139)):
    for o in ((10,) if args.quick else (1, 10)):
      key = f"T{t}_outputs{o}"
      out["masked_format"][key] = masked_vs_labelled(
          t, o, batch, features, 40, 3 if args.quick else 7, 3 if args.quick else 50)
      common.log(key, out["masked_format"][key])
  out["host_input_faster_than_step"] = all(v["input_over_consumption"] > 1
                                           for v in out["input"].values())
  out["environment"] = common.environment()
  common.emit(out)


if __name__ == "__main__":
  main()
