"""Masked-LM training step: ours (gathered, tied head) vs transformers' BertForMaskedLM, same run.

One step = forward + backward + AdamW update of BERT + its MLM head
(transform dense + GELU + LayerNorm, decoder tied to the word embeddings,
output bias), dropout on, float32, MiniLM size (6 layers, hidden 384, vocab
30522), on one BERT-masked batch of random token ids (~15% of the real
tokens selected, at most ``--predictions`` per sequence, ~25% right padding).

  jax        our model (sharing=hard, masked_lm kind): hidden states gathered at the
             K masked positions, then transform + decoder on [B, K] rows
  jax_full   the same model fed every position (K = L, mask = the masked ones):
             full-vocabulary logits [B, L, V], what a head without the gather does
  torch      transformers BertForMaskedLM, labels -100 off the masked positions
             (its own API: full [B, L, V] logits, then cross-entropy)

All three are timed round-robin in one process. Goals: tokens/s(jax) >=
tokens/s(torch) (``ratio_torch_over_jax_time`` >= 1) and the gather's saving
``ratio_full_over_gather_time``. Tokens are batch x sequence length.
``--smoke``: a tiny model, a few repeats (< 20 s), for tests.

Prints one JSON object on stdout.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
from encoder_step_time import MINILM, QUICK as SMOKE, hf_bert_config  # noqa: E402  (same sizes)
SPECIAL = (0, 100, 101, 102, 103)  # BERT's [PAD] [UNK] [CLS] [SEP] [MASK]


def make_batch(size, batch, length, predictions, seed=0):
  """A masked batch: inputs (with masked_lm_positions), targets [B, K], weights [B, K]."""
  import numpy as np
  from mtl_jax.data import mlm_masking
  rs = np.random.RandomState(seed)
  lengths = rs.randint(length * 3 // 4, length + 1, batch)
  mask = (np.arange(length)[None] < lengths[:, None]).astype(np.int32)
  ids = rs.randint(1000 if size["vocab_size"] > 2000 else 105, size["vocab_size"],
                   (batch, length)).astype(np.int32) * mask
  ids[:, 0] = 101
  ids[np.arange(batch), lengths - 1] = 102
  m = mlm_masking.mask_sequences(ids, mask, SPECIAL, 103, size["vocab_size"], seed=seed,
                                 max_predictions=predictions)
  inputs = {"input_ids": m["input_ids"], "attention_mask": mask,
            "token_type_ids": np.zeros_like(ids), mlm_masking.POSITIONS: m["positions"]}
  return inputs, m["targets"], m["weights"]


def full_batch(inputs, targets, weights):
  """The same batch with every position gathered (K = L): full-vocabulary logits."""
  import numpy as np
  from mtl_jax.data import mlm_masking
  b, length = inputs["input_ids"].shape
  y = np.zeros((b, length), np.int32)
  w = np.zeros((b, length), bool)
  rows = np.arange(b)[:, None].repeat(targets.shape[1], 1)
  pos = inputs[mlm_masking.POSITIONS]
  y[rows[weights], pos[weights]] = targets[weights]
  w[rows[weights], pos[weights]] = True
  full = dict(inputs, **{mlm_masking.POSITIONS: np.tile(np.arange(length, dtype=np.int32), (b, 1))})
  return full, y, w


class JaxStep:
  def __init__(self, size, inputs, targets, weights, lr):
    import jax
    import optax
    from mtl_jax import losses
    from mtl_jax.models import build_model
    from mtl_jax.tasks import group_tasks, specs_from_config
    specs = specs_from_config([dict(name="mlm", kind="masked_lm",
                                    num_outputs=size["vocab_size"])])
    groups = group_tasks(specs)
    model = build_model(dict(sharing="hard", trunk=dict(name="bert", **size, dropout=0.1,
                                                        pooling="none", pooler=False)), groups)
    params = jax.jit(lambda r: model.init(r, inputs)["params"])(jax.random.PRNGKey(0))
    tx = optax.adamw(lr, weight_decay=0.01)

    def step(state, x, y, w):
      params, opt, rng = state
      rng, drop = jax.random.split(rng)

      def loss_fn(p):
        out = model.apply({"params": p}, x, True, rngs={"dropout": drop})
        return losses.task_losses(specs, groups, out, {"mlm": y}, {"mlm": w})[0]

      loss, grads = jax.value_and_grad(loss_fn)(params)
      updates, opt = tx.update(grads, opt, params)
      return (optax.apply_updates(params, updates), opt, rng), loss

    self.args = jax.device_put((inputs, targets, weights))
    self.state = (params, tx.init(params), jax.random.PRNGKey(1))
    t0 = time.perf_counter()
    self.step = jax.jit(step, donate_argnums=0).lower(self.state, *self.args).compile()
    self.compile_s = time.perf_counter() - t0
    self.num_params = int(sum(p.size for p in jax.tree.leaves(params)))

  def run(self, n):
    state = self.state
    t0 = time.perf_counter()
    for _ in range(n):
      state, loss = self.step(state, *self.args)
    loss.block_until_ready()
    self.state, self.loss = state, float(loss)
    return (time.perf_counter() - t0) / n


class TorchStep:
  def __init__(self, size, inputs, targets, weights, lr):
    import numpy as np
    import torch
    from transformers import BertForMaskedLM
    from mtl_jax.data import mlm_masking
    torch.manual_seed(0)
    cfg = hf_bert_config(size)
    self.torch = torch
    self.model = BertForMaskedLM(cfg).train()
    self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01)
    pos = inputs[mlm_masking.POSITIONS]
    labels = np.full(inputs["input_ids"].shape, -100, np.int64)
    rows = np.arange(len(pos))[:, None].repeat(pos.shape[1], 1)
    labels[rows[weights], pos[weights]] = targets[weights]
    self.x = {k: torch.tensor(inputs[k], dtype=torch.long)
              for k in ("input_ids", "attention_mask", "token_type_ids")}
    self.labels = torch.tensor(labels)
    self.num_params = int(sum(p.numel() for p in self.model.parameters()))
    self.attn = getattr(self.model.config, "_attn_implementation", None)

  def run(self, n):
    t0 = time.perf_counter()
    for _ in range(n):
      self.opt.zero_grad(set_to_none=True)
      loss = self.model(**self.x, labels=self.labels).loss
      loss.backward()
      self.opt.step()
    self.loss = loss.item()
    return (time.perf_counter() - t0) / n


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny model, 2 repeats (< 20 s)")
  p.add_argument("--batch", type=int, default=0, help="0: 32 (smoke: 4)")
  p.add_argument("--seq-len", type=int, default=0, help="0: 128 (smoke: 16)")
  p.add_argument("--predictions", type=int, default=0,
                 help="max masked positions per sequence K (0: 20, BERT's at 128; smoke: 3)")
  p.add_argument("--repeats", type=int, default=0, help="0: 7 (smoke: 2)")
  p.add_argument("--steps", type=int, default=0, help="steps per repeat (0: ~1 s of work)")
  p.add_argument("--torch-threads", type=int, default=0,
                 help="torch.set_num_threads (0: torch's default, one per core)")
  p.add_argument("--no-full", action="store_true", help="skip the full-vocabulary variant")
  args = p.parse_args(argv)
  size = SMOKE if args.smoke else MINILM
  batch = args.batch or (4 if args.smoke else 32)
  length = args.seq_len or (16 if args.smoke else 128)
  k = args.predictions or (3 if args.smoke else 20)
  repeats = args.repeats or (2 if args.smoke else 7)
  lr = 1e-4
  inputs, targets, weights = make_batch(size, batch, length, k)

  import jax
  import torch
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  common.log(f"building: batch {batch} x {length} tokens, K={k}, {size}")
  runners = {"jax": JaxStep(size, inputs, targets, weights, lr)}
  if not args.no_full:
    runners["jax_full"] = JaxStep(size, *full_batch(inputs, targets, weights), lr)
  runners["torch"] = TorchStep(size, inputs, targets, weights, lr)
  counts = {}
  for name, r in runners.items():
    r.run(1)  # warm-up (torch allocator, XLA first run)
    per = r.run(1)
    counts[name] = args.steps or int(max(1, min(50, round((0.1 if args.smoke else 1.0) / per))))
  times = common.time_interleaved_each(runners, repeats, counts, warmup=0)
  tokens = batch * length
  ms = {n: t["median_ms"] for n, t in times.items()}
  result = {
      "benchmark": "mlm_step_time",
      "config": {"model": size, "batch": batch, "seq_len": length, "max_predictions": k,
                 "masked_tokens": int(weights.sum()), "dtype": "float32", "dropout": 0.1,
                 "optimizer": "AdamW", "real_tokens_frac": float(inputs["attention_mask"].mean()),
                 "steps_per_repeat": counts, "repeats": repeats},
      "threads": {"torch_num_threads": torch.get_num_threads(),
                  "torch_attention": runners["torch"].attn, "torch_version": torch.__version__,
                  "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
                  "jax_devices": [str(d) for d in jax.devices()], "cpu_count": os.cpu_count()},
      "num_params": {n: r.num_params for n, r in runners.items()},
      "compile_s_jax": round(runners["jax"].compile_s, 2),
      "step_time_ms": {n: round(v, 2) for n, v in ms.items()},
      "step_time_samples_ms": {n: t["samples_ms"] for n, t in times.items()},
      "tokens_per_s": {n: round(tokens / (v / 1e3), 1) for n, v in ms.items()},
      "tokens_per_s_best": {n: round(tokens / (t["min_ms"] / 1e3), 1) for n, t in times.items()},
      "ratio_torch_over_jax_time": round(common.paired_ratio(times["torch"]["samples_ms"],
                                                             times["jax"]["samples_ms"]), 3),
      "ratio_best": round(times["torch"]["min_ms"] / times["jax"]["min_ms"], 3),
      "goal": "tokens/s(jax) >= tokens/s(torch), i.e. ratio_torch_over_jax_time >= 1",
      "final_loss": {n: r.loss for n, r in runners.items()},
      "environment": common.environment(),
  }
  result["goal_met"] = bool(result["ratio_torch_over_jax_time"] >= 1.0)
  if "jax_full" in times:
    result["ratio_full_over_gather_time"] = round(common.paired_ratio(
        times["jax_full"]["samples_ms"], times["jax"]["samples_ms"]), 3)
  common.emit(result)


if __name__ == "__main__":
  main()
