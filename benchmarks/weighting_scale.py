"""How the gradient methods scale with the number of tasks T and the model size.

A hard-shared MLP with T linear regression heads, batch 512, Adam; T in
{1, 8, 32, 128} and two trunks: ``small`` (100 -> 256 -> 256, as in the issue
that asked for this) and ``10m`` (1024 -> 2048 -> 2048 -> 2048, 10.5M
parameters). Per (size, T) and method, one full train step is compiled
through the library's own factory (``common.build`` / ``with_weighting``):

* ``ew``: the weighted sum, one backward pass (the reference).
* ``gramian/<agg>``: the default path of Gramian-weighted aggregators
  (``gramian_engine="leaf"``: each shared leaf's [T, p] block from one
  vmapped VJP, then contracted).
* ``gramian_rows/<agg>``: the same aggregators with ``gramian_engine="rows"``
  (row s of G as the JVP along task s's gradient, one task at a time).
* ``jacobian/<agg>``: the stored T x P Jacobian (``mode="jacobian"``).
* ``representation/<agg>``: MGDA-UB on the shared features.

Reported: XLA's temp memory of each step over EW's (``memory_analysis``), and
whether the compiled program holds a buffer of T x P_shared floats (HLO text).
Steps are timed (interleaved, medians) on the sizes in ``--time-sizes``
(default ``small``: a 10M-parameter step at T = 128 is minutes on two CPU
cores). Goals (at T = 128 unless said): every aggregator's step <= 2x the
``mean`` aggregator's on the same path; Gramian temp memory <= 2x EW at T = 32
on the 10M trunk (``gramian_engine="rows"``), with no T x P buffer;
representation methods <= 1.3x EW.

Prints one JSON object on stdout.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SIZES = {"small": (100, (256, 256)), "10m": (1024, (2048, 2048, 2048))}
AGGREGATORS = ("mean", "upgrad", "mgda", "pcgrad", "cagrad", "nash_mtl", "dualproj", "imtl_g",
               "aligned_mtl")
REPRESENTATION = ("mgda", "upgrad")


def methods(quick: bool):
  aggs = ("mean", "upgrad") if quick else AGGREGATORS
  out = {"ew": None}
  out.update({f"gramian/{a}": {"aggregator": a, "mode": "gramian"} for a in aggs})
  out.update({f"gramian_rows/{a}": {"aggregator": a, "mode": "gramian", "gramian_engine": "rows"}
              for a in ("mean", "upgrad")})
  out.update({f"jacobian/{a}": {"aggregator": a, "mode": "jacobian"} for a in aggs})
  out.update({f"representation/{a}": {"aggregator": a, "mode": "representation"}
              for a in REPRESENTATION[:1 if quick else None]})
  return out


def has_t_by_p_buffer(compiled, t: int, p: int) -> bool:
  return f"f32[{t},{p}]" in compiled.as_text()


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--num-tasks", default="1,8,32,128")
  ap.add_argument("--sizes", default="small,10m")
  ap.add_argument("--time-sizes", default="small")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--batch", type=int, default=512)
  ap.add_argument("--quick", action="store_true", help="one tiny size, T=4, two aggregators")
  args = ap.parse_args(argv)
  sizes = {k: SIZES[k] for k in args.sizes.split(",")}
  ts = [int(t) for t in args.num_tasks.split(",")]
  batch = args.batch
  if args.quick:
    # One tiny size and T: every path and method still compiles, is timed and HLO-checked.
    sizes, ts, batch = {"small": (16, (32,))}, [4], 32
  timed = set(args.time_sizes.split(",")) if not args.quick else set(sizes)

  memory, t_by_p, step_ms, ratios, skipped, params = {}, {}, {}, {}, {}, {}
  for size, (input_dim, trunk) in sizes.items():
    for t in ts:
      key = f"{size}/T={t}"
      config = {"tasks": [{"name": f"t{i}", "kind": "regression"} for i in range(t)],
                "model": {"sharing": "hard", "trunk": {"name": "mlp", "features": trunk}},
                "optimizer": {"name": "adam", "learning_rate": 1e-3},
                "batch_size": batch, "input_shape": (input_dim,)}
      base = common.build(config, host_init=True)
      shared = sum(x.size for k, x in common.flat_leaves(base.state.params).items()
                   if k.startswith("trunk/"))
      params[size] = {"total": base.num_params(), "shared": int(shared)}
      batch_arrays = common.random_batch(base.specs, batch, base.input_shape, seed=t)
      timers, memory[key], t_by_p[key], skipped[key] = {}, {}, {}, {}
      for name, wcfg in methods(args.quick).items():
        if t == 1 and name != "ew" and not name.endswith("/mean"):
          continue  # one task: nothing to combine
        try:
          timer = common.StepTimer(common.with_weighting(base, wcfg), batch_arrays)
        except Exception as e:  # noqa: BLE001 -- record and go on
          skipped[key][name] = f"{type(e).__name__}: {e}"[:300]
          continue
        memory[key][name] = common.memory_stats(timer.compiled)
        t_by_p[key][name] = has_t_by_p_buffer(timer.compiled, t, shared)
        timers[name] = timer
        common.log(f"{key} {name}: temp {memory[key][name].get('temp', 0) / 2**20:.1f} MiB, "
                   f"TxP buffer {t_by_p[key][name]}")
      if size in timed:
        for tm in timers.values():
          tm.run(1)
        times = common.time_interleaved_each(timers, args.repeats, {n: 1 for n in timers},
                                             warmup=0)
        step_ms[key] = {n: round(v["median_ms"], 3) for n, v in times.items()}
        s = {n: v["samples_ms"] for n, v in times.items()}
        r = {}
        for n in times:
          path = n.split("/")[0]
          if path in ("gramian", "gramian_rows", "jacobian") and f"{path}/mean" in s:
            r[f"{n}_over_{path}_mean"] = round(common.paired_ratio(s[n], s[f"{path}/mean"]), 3)
          if n != "ew":
            r[f"{n}_over_ew"] = round(common.paired_ratio(s[n], s["ew"]), 3)
        ratios[key] = r
      del timers

  def temp_over_ew(key, name):
    m = memory.get(key, {})
    return round(common.ratio(m[name]["temp"], m["ew"]["temp"]), 3) if name in m and m.get(
        "ew", {}).get("temp") else None

  memory_ratio = {k: {n: temp_over_ew(k, n) for n in memory[k] if n != "ew"} for k in memory}
  t_goal = max(ts)
  agg_key = next((f"{s}/T={t_goal}" for s in sizes if s in timed), None)
  agg_ratios = {n: v for n, v in ratios.get(agg_key, {}).items() if "_over_" in n
                and n.endswith("_mean") and not n.startswith("representation")}
  mem_key = f"{'10m' if '10m' in sizes else list(sizes)[-1]}/T={32 if 32 in ts else ts[-1]}"
  gram_mem = {n: v for n, v in memory_ratio.get(mem_key, {}).items() if n.startswith("gramian")}
  rows_mem = [v for n, v in gram_mem.items() if n.startswith("gramian_rows/")]
  rep = {k: {n: v for n, v in r.items() if n.startswith("representation/") and n.endswith("_ew")}
         for k, r in ratios.items()}
  rep_vals = [v for r in rep.values() for v in r.values()]
  targets = {
      "aggregator_over_mean_at_T": {"at": agg_key, "target": "<= 2.0", "ratios": agg_ratios,
                                    "met": bool(agg_ratios) and all(v <= 2.0 for v in agg_ratios.values())},
      "gramian_temp_over_ew": {"at": mem_key, "target": "<= 2.0 (gramian_engine='rows'; the "
                               "default 'leaf' trades memory for speed)", "ratios": gram_mem,
                               "met": bool(rows_mem) and all(v is not None and v <= 2.0
                                                             for v in rows_mem)},
      "gramian_no_t_by_p_buffer": {"met": all(not v for k in t_by_p for n, v in t_by_p[k].items()
                                              if n.startswith("gramian"))},
      "representation_over_ew": {"target": "<= 1.3", "ratios": rep,
                                 "met": bool(rep_vals) and all(v <= 1.3 for v in rep_vals)},
  }
  common.emit({"benchmark": "weighting_scale",
               "config": {"sizes": {k: {"input_dim": v[0], "trunk": list(v[1])}
                                    for k, v in sizes.items()},
                          "params": params, "batch_size": batch, "num_tasks": ts,
                          "timed_sizes": sorted(timed), "repeats": args.repeats,
                          "quick": args.quick, "heads": "linear regression, one per task"},
               "step_time_ms": step_ms, "ratios": ratios, "temp_memory_over_ew": memory_ratio,
               "t_by_p_buffer": t_by_p, "memory_bytes": memory, "targets": targets,
               "skipped": skipped, "environment": common.environment()})


if __name__ == "__main__":
  main()
