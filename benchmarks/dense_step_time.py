"""The dense model's train step: mtl_jax against a LibMTL-style PyTorch loop and torchjd.

Same model, batch, resolution and initial parameters on every side, timed warm and
round-robin in one process (issue 19, "Study and benchmark"): a hard-shared SegNet
(MTAN's ``segnet`` structure at ``--widths``, GroupNorm) with MTAN's conv prediction layer
per task, on a ``dense_shapes`` batch of three tasks (segmentation, depth, normals; the
kinds' losses: cross entropy over labelled pixels, L1 on valid depth, 1 - cosine of the
normalised normal). Adam lr 1e-4. The torch twin is built from the same weights and its
initial losses must equal mtl_jax's (checked before timing).

Sides, as benchmarks/weighting_vs_torch.py defines them (its ``torch_step`` runs the torch
sides on this model's losses): ``mtl_jax/<agg>`` (the library's step: the Gramian path for
Gramian-weighted aggregators), ``mtl_jax/<agg>@rows`` (its rows Gramian engine),
``mtl_jax/<agg>@jacobian`` (the stored T x P Jacobian), ``mtl_jax/mgda@representation``
(MGDA-UB on the SegNet's feature map), ``torchjd_autogram/<agg>``,
``torchjd_autojac/<agg>``, ``loop/<agg>`` (T ``loss_t.backward(retain_graph=True)``,
LibMTL's ``_compute_grad``), and the equal-weights floors ``mtl_jax/ew``, ``torch/ew``.

Memory: XLA's buffer assignment of each compiled mtl_jax step (``common.memory_stats``:
temp bytes and argument+output+temp), so the Gramian path, the rows engine and the stored
Jacobian can be compared with EW on this model.

  XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
    python benchmarks/dense_step_time.py --torch-threads 1            # ~ minutes on a CPU
  python benchmarks/dense_step_time.py --smoke                        # < 20 s: tiny, 1 step

Prints one JSON object: {"benchmark", "config", "params", "step_time_ms": {name: ms},
"ratio_vs_ew", "ratio_vs_torchjd": {agg: best of autogram/autojac}, "ratio_vs_loop",
"memory_bytes": {name: {...}}, "memory_ratio_vs_ew", "strategies", "skipped", "compile_s",
"threads", "environment"}.
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from benchmarks import weighting_vs_torch as wvt  # noqa: E402
from mtl_jax import losses as losses_lib  # noqa: E402
from mtl_jax.data import DATASETS  # noqa: E402

TASKS = [{"name": "segmentation", "kind": "segmentation", "num_outputs": 6},
         {"name": "depth", "kind": "depth"}, {"name": "normal", "kind": "normals",
                                              "num_outputs": 3}]
AGGREGATORS = ("upgrad", "pcgrad", "cagrad", "mgda")


def torch_segnet(features, convs_per_level, groups, outputs):
  """The PyTorch twin of ``hard`` + ``segnet`` + ``decoder=conv``: ``trunk`` and ``heads``."""
  torch = wvt._torch()
  nn, F = torch.nn, torch.nn.functional

  def cnr(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1),
                         nn.GroupNorm(min(groups, cout), cout, eps=1e-5), nn.ReLU())

  class Level(nn.Module):
    def __init__(self, cin, cout, extra):
      super().__init__()
      self.convs = nn.ModuleList([cnr(cin, cout)] + [cnr(cout, cout) for _ in range(extra)])

    def forward(self, x):
      for c in self.convs:
        x = c(x)
      return x

  class SegNet(nn.Module):
    def __init__(self):
      super().__init__()
      f, n = features, len(features)
      self.enc = nn.ModuleList(Level(3 if i == 0 else f[i - 1], f[i], convs_per_level[i])
                               for i in range(n))
      self.dec = nn.ModuleList(Level(f[n - 1 - j], f[max(n - 2 - j, 0)],
                                     convs_per_level[n - 1 - j]) for j in range(n))

    def forward(self, x):
      idx = []
      for level in self.enc:
        x, i = F.max_pool2d(level(x), 2, 2, return_indices=True)
        idx.append(i)
      for j, level in enumerate(self.dec):
        x = level(F.max_unpool2d(x, idx[len(idx) - 1 - j], 2, 2))
      return x

  class Head(nn.Module):
    def __init__(self, d, out):
      super().__init__()
      self.conv_0, self.out = nn.Conv2d(d, d, 3, padding=1), nn.Conv2d(d, out, 1)

    def forward(self, x):
      return self.out(self.conv_0(x))

  class Model(nn.Module):
    def __init__(self):
      super().__init__()
      self.trunk = SegNet()
      self.heads = nn.ModuleList(Head(features[0], o) for o in outputs)

  return Model()


def load_weights(model, params, order):
  """Copies mtl_jax's params into the torch twin (``order``: the head group of each task)."""
  torch = wvt._torch()

  def conv(m, p):
    m.weight.data = torch.tensor(np.asarray(p["kernel"])).permute(3, 2, 0, 1).contiguous()
    m.bias.data = torch.tensor(np.asarray(p["bias"]))

  def cnr(m, p):
    conv(m[0], p["conv"])
    m[1].weight.data = torch.tensor(np.asarray(p["norm"]["scale"]))
    m[1].bias.data = torch.tensor(np.asarray(p["norm"]["bias"]))

  for i, level in enumerate(list(model.trunk.enc) + list(model.trunk.dec)):
    for c, m in enumerate(level.convs):
      cnr(m, params["trunk"][f"block_{i}"][f"conv_{c}"])
  for head, key in zip(model.heads, order):
    h = jax.tree.map(lambda v: v[0], params["heads"][key])
    conv(head.conv_0, h["conv_0"])
    conv(head.out, h["out"])


class DenseBatch:
  """The batch as torch tensors (NCHW images; labels as the kinds read them)."""

  def __init__(self, batch):
    torch = wvt._torch()
    host = jax.device_get(batch)
    self.inputs = torch.from_numpy(np.array(host["inputs"], np.float32)).permute(
        0, 3, 1, 2).contiguous()
    lab = host["labels"]
    self.seg = torch.from_numpy(np.array(lab["segmentation"], np.int64))
    self.depth = torch.from_numpy(np.array(lab["depth"], np.float32))
    self.normal = torch.from_numpy(np.array(lab["normal"], np.float32)).permute(
        0, 3, 1, 2).contiguous()


def dense_losses(model, batch):
  """(features, [seg, depth, normal]) as LibMTL's NYUv2 losses (every example labelled)."""
  torch = wvt._torch()
  F = torch.nn.functional
  features = model.trunk(batch.inputs)
  seg, depth, normal = (h(features) for h in model.heads)
  ls = F.cross_entropy(seg, batch.seg, ignore_index=-1)
  valid = batch.depth > 0
  ld = (depth[:, 0] - batch.depth).abs()[valid].mean()
  n = normal / normal.norm(dim=1, keepdim=True).clamp_min(1e-12)
  nvalid = batch.normal.abs().sum(1) > 0
  ln = 1.0 - (n * batch.normal).sum(1)[nvalid].mean()
  return features, [ls, ld, ln]


def methods_for(aggs, smoke):
  jax_paths = [("mtl_jax/ew", None)] + [(f"mtl_jax/{a}", {"aggregator": a}) for a in aggs]
  if aggs and not smoke:  # the other paths of the first aggregator
    a = aggs[0]
    jax_paths += [(f"mtl_jax/{a}@rows", {"aggregator": a, "gramian_engine": "rows"}),
                  (f"mtl_jax/{a}@jacobian", {"aggregator": a, "mode": "jacobian"}),
                  ("mtl_jax/mgda@representation", {"aggregator": "mgda",
                                                   "mode": "representation"})]
  torch_sides = [("torch/ew", "torch", None)]
  for a in aggs:
    sides = ("loop", "torchjd_autogram") if smoke else ("loop", "torchjd_autogram",
                                                        "torchjd_autojac")
    torch_sides += [(f"{s}/{a}", s, a) for s in sides]
  return jax_paths, torch_sides


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--size", type=int, default=64)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--widths", default="16,32,64")
  p.add_argument("--aggregators", default=",".join(AGGREGATORS))
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--repeat-s", type=float, default=0.5)
  p.add_argument("--torch-threads", type=int, default=0)
  p.add_argument("--smoke", action="store_true", help="tiny model, 16x16, 1 step per repeat")
  args = p.parse_args(argv)
  if args.smoke:
    args.size, args.batch, args.widths, args.repeats = 16, 2, "4,8", 1
    args.aggregators = "upgrad"
  torch = wvt._torch()
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  widths = tuple(int(w) for w in args.widths.split(","))
  convs = tuple(1 if i < 2 else 2 for i in range(len(widths)))
  aggs = [a for a in args.aggregators.split(",") if a]
  config = {"tasks": TASKS, "batch_size": args.batch, "input_shape": (args.size, args.size, 3),
            "model": {"sharing": "hard", "decoder": {"name": "conv"},
                      "trunk": {"name": "segnet", "features": widths, "convs_per_level": convs,
                                "norm_groups": 8}},
            "optimizer": {"name": "adam", "learning_rate": 1e-4}}
  base = common.build(config, host_init=args.smoke)
  data = DATASETS.get("dense_shapes")(size=args.size, num_train=args.batch, num_validation=1,
                                      num_test=0).train
  batch = jax.device_put({"inputs": data.inputs, "labels": data.labels, "mask": data.mask})
  order = [next(g.key for g in base.groups if t["name"] in g.names) for t in TASKS]
  tbatch = DenseBatch(batch)
  probe = torch_segnet(widths, convs, 8, [6, 1, 3])
  load_weights(probe, base.state.params, order)
  n_torch = sum(q.numel() for q in probe.parameters())
  if n_torch != base.num_params():
    raise RuntimeError(f"mtl_jax has {base.num_params()} parameters, torch {n_torch}")
  with torch.no_grad():
    got = np.array([v.item() for v in dense_losses(probe, tbatch)[1]])
  out = base.model.apply({"params": base.state.params}, batch["inputs"])
  want = np.asarray(losses_lib.task_losses(base.specs, base.groups, out, batch["labels"],
                                           batch["mask"]))
  if not np.allclose(got, want, rtol=2e-4, atol=1e-5):
    raise RuntimeError(f"torch losses {got} != mtl_jax's {want}")

  jax_paths, torch_sides = methods_for(aggs, args.smoke)
  runners, strategies, memory, skipped, compile_s = {}, {}, {}, {}, {}
  for name, weighting in jax_paths:
    t0 = time.perf_counter()
    try:
      built = common.with_weighting(base, weighting)
      runner = common.StepTimer(built, batch)
      runner.run(1)
    except Exception as e:  # noqa: BLE001 -- recorded, not fatal
      skipped[name] = f"{type(e).__name__}: {e}"[:400]
      continue
    compile_s[name] = round(time.perf_counter() - t0, 2)
    strategies[name] = type(built.strategy).__name__
    memory[name] = common.memory_stats(runner.compiled)
    runners[name] = runner
  for name, side, agg in torch_sides:
    t0 = time.perf_counter()
    try:
      model = torch_segnet(widths, convs, 8, [6, 1, 3])
      load_weights(model, base.state.params, order)
      runner = wvt.TorchRunner(wvt.torch_step(side, agg, model, tbatch, 1e-4, None,
                                              losses_fn=dense_losses))
      runner.run(1)
    except Exception as e:  # noqa: BLE001
      skipped[name] = f"{type(e).__name__}: {e}"[:400]
      continue
    compile_s[name] = round(time.perf_counter() - t0, 2)
    runners[name] = runner
  steps = {n: 1 if args.smoke else common.steps_for(r, args.repeat_s, cap=50)
           for n, r in runners.items()}
  times = common.time_interleaved_each(runners, args.repeats, steps, warmup=0)
  ms = {n: v["median_ms"] for n, v in times.items()}

  def paired(a, b):
    return common.paired_ratio(times[a]["samples_ms"], times[b]["samples_ms"])
  ratio_ew = {n: paired(n, "mtl_jax/ew") for n in ms if n.startswith("mtl_jax/")}
  ratio_jd, ratio_loop = {}, {}
  for a in aggs:
    ours = f"mtl_jax/{a}"
    if ours not in ms:
      continue
    peers = [f"torchjd_{s}/{a}" for s in ("autogram", "autojac") if f"torchjd_{s}/{a}" in ms]
    if peers:
      ratio_jd[a] = min(paired(ours, q) for q in peers) if len(peers) == 1 else \
          paired(ours, min(peers, key=ms.get))
    if f"loop/{a}" in ms:
      ratio_loop[a] = paired(ours, f"loop/{a}")
  ew_mem = memory.get("mtl_jax/ew", {})
  mem_ratio = {n: common.ratio(m.get("total", 0), ew_mem.get("total", 0))
               for n, m in memory.items() if ew_mem}
  common.emit({
      "benchmark": "dense_step_time",
      "config": {"size": args.size, "batch": args.batch, "widths": widths,
                 "convs_per_level": convs, "tasks": [t["name"] for t in TASKS],
                 "smoke": args.smoke, "repeats": args.repeats},
      "params": {"mtl_jax": base.num_params(), "torch": n_torch},
      "initial_losses": {"mtl_jax": want.tolist(), "torch": got.tolist()},
      "step_time_ms": ms, "steps_per_repeat": steps, "ratio_vs_ew": ratio_ew,
      "ratio_vs_torchjd": ratio_jd, "ratio_vs_loop": ratio_loop,
      "memory_bytes": memory, "memory_ratio_vs_ew": mem_ratio, "strategies": strategies,
      "skipped": skipped, "compile_s": compile_s, "threads": wvt.threads(),
      "environment": common.environment()})


if __name__ == "__main__":
  main()
