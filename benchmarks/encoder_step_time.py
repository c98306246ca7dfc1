"""BERT encoder training step: ours (JAX/Flax, jitted) vs transformers + PyTorch, same run.

One step = forward + backward + AdamW update of a BERT encoder with a linear
classifier on [CLS] and softmax cross-entropy, dropout on (training mode),
float32, on the same model size (all-MiniLM-L6-v2: 6 layers, hidden 384, 12
heads, FFN 1536, vocab 30522), batch and sequence length, on random token ids
with ~25% right padding. Both sides are timed round-robin in the same process
so machine noise hits both alike. Goal: tokens/s(ours) >= tokens/s(torch).

Prints one JSON object on stdout:
  {"benchmark", "config", "threads", "step_time_ms": {"jax", "torch"},
   "tokens_per_s": {...}, "ratio_torch_over_jax_time" (median of per-repeat ratios),
   "ratio_best" (best repeat of each), "goal_met", ...}
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

MINILM = dict(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
              intermediate_size=1536, max_position=512, type_vocab_size=2)
QUICK = dict(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
             max_position=64, type_vocab_size=2)


def make_batch(size, batch, length, num_classes, seed=0):
  import numpy as np
  rs = np.random.RandomState(seed)
  lengths = rs.randint(length * 3 // 4, length + 1, batch)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids = rs.randint(1000 if size["vocab_size"] > 2000 else 5, size["vocab_size"],
                   (batch, length)).astype(np.int32) * mask
  ids[:, 0] = 101 if size["vocab_size"] > 2000 else 2
  types = np.zeros_like(ids)
  labels = rs.randint(0, num_classes, batch).astype(np.int32)
  return dict(input_ids=ids, attention_mask=mask, token_type_ids=types), labels


class JaxStep:
  def __init__(self, size, x, y, num_classes, lr, dtype):
    import flax.linen as nn
    import jax
    import optax
    from mtl_jax.models.trunks import build_trunk

    class Classifier(nn.Module):
      @nn.compact
      def __call__(self, x, train):
        f = build_trunk(dict(name="bert", **size, dropout=0.1, pooling="cls", pooler=False,
                             dtype=dtype))(x, train)
        return nn.Dense(num_classes)(f)

    model = Classifier()
    params = jax.jit(lambda r: model.init(r, x, False)["params"])(jax.random.PRNGKey(0))
    tx = optax.adamw(lr, weight_decay=0.01)

    def step(state, x, y):
      params, opt, rng = state
      rng, drop = jax.random.split(rng)

      def loss_fn(p):
        logits = model.apply({"params": p}, x, True, rngs={"dropout": drop})
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt = tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt, rng), loss

    self.x, self.y = jax.device_put(x), jax.device_put(y)
    self.state = (params, tx.init(params), jax.random.PRNGKey(1))
    t0 = time.perf_counter()
    self.step = jax.jit(step, donate_argnums=0).lower(self.state, self.x, self.y).compile()
    self.compile_s = time.perf_counter() - t0
    self.num_params = int(sum(p.size for p in jax.tree.leaves(params)))

  def run(self, n):
    state = self.state
    t0 = time.perf_counter()
    for _ in range(n):
      state, loss = self.step(state, self.x, self.y)
    loss.block_until_ready()
    self.state, self.loss = state, float(loss)
    return (time.perf_counter() - t0) / n


def hf_bert_config(size):
  """transformers' BertConfig of one of the sizes above (the torch side of every BERT benchmark)."""
  from transformers import BertConfig
  return BertConfig(vocab_size=size["vocab_size"], hidden_size=size["hidden_size"],
                    num_hidden_layers=size["num_layers"], num_attention_heads=size["num_heads"],
                    intermediate_size=size["intermediate_size"],
                    max_position_embeddings=size["max_position"],
                    type_vocab_size=size["type_vocab_size"], hidden_act="gelu")


class TorchStep:
  def __init__(self, size, x, y, num_classes, lr):
    import torch
    from transformers import BertModel
    torch.manual_seed(0)
    cfg = hf_bert_config(size)
    self.torch = torch
    self.bert = BertModel(cfg, add_pooling_layer=False).train()
    self.head = torch.nn.Linear(size["hidden_size"], num_classes)
    params = list(self.bert.parameters()) + list(self.head.parameters())
    self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    self.x = {k: torch.tensor(v, dtype=torch.long) for k, v in x.items()}
    self.y = torch.tensor(y, dtype=torch.long)
    self.num_params = int(sum(p.numel() for p in params))
    self.attn = getattr(self.bert.config, "_attn_implementation", None)

  def run(self, n):
    torch = self.torch
    t0 = time.perf_counter()
    for _ in range(n):
      self.opt.zero_grad(set_to_none=True)
      h = self.bert(**self.x).last_hidden_state[:, 0]
      loss = torch.nn.functional.cross_entropy(self.head(h), self.y)
      loss.backward()
      self.opt.step()
    self.loss = loss.item()
    return (time.perf_counter() - t0) / n


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--quick", action="store_true", help="tiny model, for a smoke run")
  p.add_argument("--batch", type=int, default=0, help="0: 32 (quick: 4)")
  p.add_argument("--seq-len", type=int, default=0, help="0: 128 (quick: 16)")
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--steps", type=int, default=0, help="steps per repeat (0: ~1 s of work)")
  p.add_argument("--dtype", default="float32", help="compute dtype of our encoder")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch.set_num_threads (0: torch's default, one per core)")
  args = p.parse_args(argv)
  size = QUICK if args.quick else MINILM
  batch = args.batch or (4 if args.quick else 32)
  length = args.seq_len or (16 if args.quick else 128)
  num_classes, lr = 3, 1e-4
  x, y = make_batch(size, batch, length, num_classes)

  import jax
  import torch
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  common.log(f"building: batch {batch} x {length} tokens, {size}")
  ours = JaxStep(size, x, y, num_classes, lr, args.dtype)
  ref = TorchStep(size, x, y, num_classes, lr)
  runners = {"jax": ours, "torch": ref}
  counts = {}
  for name, r in runners.items():
    r.run(1)  # warm-up (torch allocator, XLA first run)
    per = r.run(1)
    counts[name] = args.steps or int(max(1, min(50, round((0.15 if args.quick else 1.0) / per))))
  times = common.time_interleaved_each(runners, args.repeats, counts, warmup=0)
  tokens = batch * length
  ms = {n: t["median_ms"] for n, t in times.items()}
  ratio = common.paired_ratio(times["torch"]["samples_ms"], times["jax"]["samples_ms"])
  common.emit({
      "benchmark": "encoder_step_time",
      "config": {"model": size, "batch": batch, "seq_len": length, "dtype_jax": args.dtype,
                 "dtype_torch": "float32", "dropout": 0.1, "optimizer": "AdamW",
                 "real_tokens_frac": float(x["attention_mask"].mean()),
                 "steps_per_repeat": counts, "repeats": args.repeats},
      "threads": {"torch_num_threads": torch.get_num_threads(),
                  "torch_num_interop_threads": torch.get_num_interop_threads(),
                  "torch_attention": ref.attn, "torch_version": torch.__version__,
                  "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                  "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
                  "jax_devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count(),
                  "sched_affinity": len(os.sched_getaffinity(0))},
      "num_params": {"jax": ours.num_params, "torch": ref.num_params},
      "compile_s_jax": round(ours.compile_s, 2),
      "step_time_ms": {n: round(v, 2) for n, v in ms.items()},
      "step_time_samples_ms": {n: t["samples_ms"] for n, t in times.items()},
      "tokens_per_s": {n: round(tokens / (v / 1e3), 1) for n, v in ms.items()},
      # Best repeat of each side: on a shared machine the least disturbed sample.
      "tokens_per_s_best": {n: round(tokens / (t["min_ms"] / 1e3), 1) for n, t in times.items()},
      "ratio_best": round(times["torch"]["min_ms"] / times["jax"]["min_ms"], 3),
      "ratio_torch_over_jax_time": round(ratio, 3),
      "goal": "tokens/s(jax) >= tokens/s(torch), i.e. ratio_torch_over_jax_time >= 1",
      "goal_met": bool(ratio >= 1.0),
      "final_loss": {"jax": ours.loss, "torch": ref.loss},
      "environment": common.environment(),
  })


if __name__ == "__main__":
  main()
