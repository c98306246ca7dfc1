"""Our masked-LM loss vs `transformers`' BertForMaskedLM on CPU torch, same weights, same batch.

MiniLM's sentence-transformers checkpoint holds no ``cls.predictions`` head,
so a head is initialised on our side (non-trivial values), copied into
BertForMaskedLM with ``to_hf_mlm_tensors`` (its decoder is tied to the word
embeddings, as ours), and both score the same BERT-masked batch: HF gets
labels at the masked positions and -100 elsewhere. Tolerance (float32):
logits at the masked positions atol 1e-4, loss rtol 1e-5 (measured gaps are
in docs/text.md). A random transformers BertForMaskedLM saved with
``save_pretrained`` checks the ``cls.predictions.*`` names our loader reads.
"""

import jax
import numpy as np
import pytest

from mtl_jax import losses
from mtl_jax.data import mlm_masking
from mtl_jax.models import build_model
from mtl_jax.pretrained import hf_bert
from mtl_jax.tasks import group_tasks, specs_from_config
from test_bert_parity import SECONDS, SENTENCES, _reference

LOGIT_ATOL, LOSS_RTOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def minilm():
  from mtl_jax.pretrained import minilm_dir
  try:
    return minilm_dir()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def _masked_batch(tok, vocab, max_length=32, k=8, seed=0):
  x = hf_bert.tokenize(tok, SENTENCES, SECONDS, max_length=max_length, max_position=512)
  special = [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
  m = mlm_masking.mask_sequences(x["input_ids"], x["attention_mask"], special,
                                 tok.token_to_id("[MASK]"), vocab, seed=seed, max_predictions=k,
                                 rate=0.3)
  inputs = dict(x, input_ids=m["input_ids"], **{mlm_masking.POSITIONS: m["positions"]})
  return inputs, m["targets"], m["weights"]


def _ours(trunk_config, trunk_params, vocab, inputs, targets, weights, seed=0):
  specs = specs_from_config([dict(name="mlm", kind="masked_lm", num_outputs=vocab)])
  groups = group_tasks(specs)
  model = build_model(dict(sharing="hard", trunk=dict(trunk_config, pooling="none",
                                                      dropout=0.0, attention_dropout=0.0)),
                      groups)
  # A fresh head (BERT's init, then non-default LayerNorm and biases, so a swap shows);
  # shapes from eval_shape, so the 30522-row table is not initialised only to be replaced.
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(seed), inputs)["params"]
  rng = np.random.default_rng(seed)
  head = {k: (0.02 if k == "transform_kernel" else 0.1) * rng.normal(size=v.shape)
          + (1.0 if k == "norm_scale" else 0.0)
          for k, v in shapes["heads"][f"masked_lm_{vocab}"].items()}
  head = {k: v.astype(np.float32) for k, v in head.items()}
  params = dict(trunk=trunk_params, heads={f"masked_lm_{vocab}": head})
  out = model.apply({"params": params}, inputs)
  loss = losses.task_losses(specs, groups, out, {"mlm": targets}, {"mlm": weights})[0]
  return np.asarray(out[f"masked_lm_{vocab}"][0]), float(loss), head


def _theirs(model, torch, inputs, targets, weights):
  pos = inputs[mlm_masking.POSITIONS]
  labels = np.full(inputs["input_ids"].shape, -100, np.int64)
  rows = np.arange(len(pos))[:, None].repeat(pos.shape[1], 1)
  labels[rows[weights], pos[weights]] = targets[weights]
  feed = {k: torch.tensor(inputs[k], dtype=torch.long)
          for k in ("input_ids", "attention_mask", "token_type_ids")}
  with torch.no_grad():
    out = model(**feed, labels=torch.tensor(labels))
  logits = out.logits.numpy()[rows, pos]  # [B, K, V] at our gathered positions
  return logits, float(out.loss)


def test_minilm_mlm_loss_matches_bert_for_masked_lm(minilm):
  transformers, torch = _reference()
  config, params, tok = hf_bert.load_hf_bert(minilm)
  vocab = config["vocab_size"]
  inputs, targets, weights = _masked_batch(tok, vocab)
  assert weights.sum() >= 12 and (inputs["input_ids"] == tok.token_to_id("[MASK]")).any()
  logits, loss, head = _ours(config, params, vocab, inputs, targets, weights)
  ref = transformers.BertForMaskedLM.from_pretrained(minilm).eval()  # cls.* freshly initialised
  state = {k: torch.tensor(v) for k, v in hf_bert.to_hf_mlm_tensors(head).items()}
  missing, unexpected = ref.load_state_dict(state, strict=False)
  assert not unexpected
  assert not [k for k in missing if k.startswith("cls.") and k != "cls.predictions.decoder.weight"]
  assert ref.cls.predictions.decoder.weight.data_ptr() == \
      ref.bert.embeddings.word_embeddings.weight.data_ptr()  # tied on their side too
  ref_logits, ref_loss = _theirs(ref, torch, inputs, targets, weights)
  np.testing.assert_allclose(logits[weights], ref_logits[weights], atol=LOGIT_ATOL)
  np.testing.assert_allclose(loss, ref_loss, rtol=LOSS_RTOL)
  print(f"MiniLM MLM parity: loss ours {loss:.7f} transformers {ref_loss:.7f}; max logit gap "
        f"{np.abs(logits[weights] - ref_logits[weights]).max():.2e}")


def test_saved_bert_for_masked_lm_loads_with_its_head(tmp_path):
  transformers, torch = _reference()
  torch.manual_seed(0)
  cfg = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=4, intermediate_size=48,
                                max_position_embeddings=20)
  ref = transformers.BertForMaskedLM(cfg).eval()
  with torch.no_grad():
    for p in ref.parameters():
      p.add_(0.05 * torch.randn_like(p))
  ref.save_pretrained(str(tmp_path), safe_serialization=True)
  loaded = hf_bert.load_trunk_params(str(tmp_path))
  head = loaded["heads"]["masked_lm_60"]
  np.testing.assert_array_equal(head["bias"][0], ref.cls.predictions.bias.detach().numpy())
  np.testing.assert_array_equal(head["transform_kernel"][0],
                                ref.cls.predictions.transform.dense.weight.detach().numpy().T)
  config = hf_bert.trunk_config(str(tmp_path))
  rng = np.random.default_rng(0)
  lengths = np.array([17, 9, 4])
  ids = rng.integers(5, 60, (3, 17)).astype(np.int32)
  att = (np.arange(17)[None] < lengths[:, None]).astype(np.int32)
  m = mlm_masking.mask_sequences(ids, att, [0, 1, 2, 3, 4], 4, 60, seed=2, max_predictions=4,
                                 rate=0.3)
  inputs = {"input_ids": m["input_ids"], "attention_mask": att, "token_type_ids": 0 * att,
            mlm_masking.POSITIONS: m["positions"]}
  specs = specs_from_config([dict(name="mlm", kind="masked_lm", num_outputs=60)])
  model = build_model(dict(sharing="hard", trunk=dict(config, pooling="none", dropout=0.0,
                                                      attention_dropout=0.0)), group_tasks(specs))
  out = model.apply({"params": loaded}, inputs)
  loss = float(losses.task_losses(specs, group_tasks(specs), out, {"mlm": m["targets"]},
                                  {"mlm": m["weights"]})[0])
  ref_logits, ref_loss = _theirs(ref, torch, inputs, m["targets"], m["weights"])
  np.testing.assert_allclose(np.asarray(out["masked_lm_60"][0])[m["weights"]],
                             ref_logits[m["weights"]], atol=LOGIT_ATOL)
  np.testing.assert_allclose(loss, ref_loss, rtol=LOSS_RTOL)
