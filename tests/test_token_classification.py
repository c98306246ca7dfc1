"""The token_classification kind: loss and metrics over labelled tokens only."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_jax import losses, metrics, tasks
from mtl_jax.tasks import LabelError, TaskSpec, group_tasks

RNG = np.random.default_rng(3)
B, L, K = 16, 9, 5


def _tokens():
  """Logits [B, L, K], labels [B, L] with -100 placeholders, token mask [B, L]
  (padding after a random length, some tokens unlabelled, one row unlabelled)."""
  lengths = RNG.integers(1, L + 1, B)
  mask = (np.arange(L)[None, :] < lengths[:, None]) & (RNG.random((B, L)) > 0.2)
  mask[4] = False
  labels = np.where(mask, RNG.integers(0, K, (B, L)), -100)
  return RNG.normal(size=(B, L, K)).astype(np.float32), labels, mask


def _ce_reference(o, y, m):
  """Mean over labelled tokens of -log softmax(o)[y], token by token."""
  terms = [np.log(np.exp(o[b, t]).sum()) - o[b, t, y[b, t]]
           for b in range(o.shape[0]) for t in range(o.shape[1]) if m[b, t]]
  return np.mean(terms) if terms else 0.0


def test_loss_is_the_mean_over_labelled_tokens():
  o, y, m = _tokens()
  spec = TaskSpec("ner", "token_classification", K)
  got = losses.task_loss(spec, jnp.asarray(o), jnp.asarray(y), jnp.asarray(m))
  ref = _ce_reference(o.astype(np.float64), y, m)
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)
  np.testing.assert_allclose(metrics.task_metrics(spec, o, y, m)["loss"], ref, rtol=1e-5)


def test_placeholders_and_nan_padding_never_reach_the_gradient():
  o, y, m = _tokens()
  o[~m] = np.nan  # e.g. fully masked attention rows
  spec = TaskSpec("ner", "token_classification", K)
  f = lambda o: losses.task_loss(spec, o, jnp.asarray(y), jnp.asarray(m))  # noqa: E731
  assert np.isfinite(float(f(jnp.asarray(o))))
  g = np.asarray(jax.grad(f)(jnp.asarray(o)))
  assert np.all(np.isfinite(g)) and np.all(g[~m] == 0.0)
  none = jnp.zeros((B, L), bool)
  h = lambda o: losses.task_loss(spec, o, jnp.asarray(y), none)  # noqa: E731
  assert float(h(jnp.asarray(o))) == 0.0
  assert np.all(np.asarray(jax.grad(h)(jnp.asarray(o))) == 0.0)


def test_accuracy_and_macro_f1_by_hand_and_against_sklearn():
  spec = TaskSpec("pos", "token_classification", 3)
  y = np.array([[0, 1, 2, -100], [1, 1, -100, -100]])
  m = y >= 0
  pred = np.array([[0, 2, 2, 1], [1, 0, 0, 0]])
  o = np.eye(3)[pred] * 5.0
  r = metrics.task_metrics(spec, o, y, m)
  # Labelled tokens: true 0 1 2 1 1, pred 0 2 2 1 0 -> 3/5 right.
  # F1: class 0 tp1 fp1 fn0 -> 2/3; class 1 tp1 fn2 -> 1/2; class 2 tp1 fp1 -> 2/3.
  assert r["count"] == 2 and r["accuracy"] == pytest.approx(0.6)
  assert r["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
  sk = pytest.importorskip("sklearn.metrics")
  o, y, m = _tokens()
  r = metrics.task_metrics(TaskSpec("ner", "token_classification", K), o, y, m)
  assert r["count"] == m.any(1).sum()
  np.testing.assert_allclose(r["accuracy"], sk.accuracy_score(y[m], o.argmax(-1)[m]))
  np.testing.assert_allclose(r["macro_f1"], sk.f1_score(y[m], o.argmax(-1)[m], average="macro"))


def test_token_labels_are_checked_per_token_and_against_the_inputs():
  o, y, m = _tokens()
  spec = TaskSpec("ner", "token_classification", K)
  ids = {"input_ids": np.zeros((B, L), np.int32), "attention_mask": np.ones((B, L), np.int32)}
  tasks.validate_labels(spec, y, m, inputs=ids)  # -100 under the mask is fine
  bad = y.copy()
  bad[2, m[2].argmax()] = K
  with pytest.raises(LabelError, match=rf"task 'ner'.*outside the classes 0..{K - 1}; first at "
                                       rf"example 2, position {m[2].argmax()}"):
    tasks.validate_labels(spec, bad, m)
  short = {"input_ids": np.zeros((B, L - 1), np.int32)}
  with pytest.raises(LabelError, match=rf"{L} positions per example.*inputs\['input_ids'\] has "
                                       rf"shape \({B}, {L - 1}\)"):
    tasks.validate_labels(spec, y, m, inputs=short)
  with pytest.raises(LabelError, match=rf"inputs has shape \({B}, {L + 2}, 4\)"):
    tasks.validate_batch([spec], {"ner": y}, {"ner": m}, inputs=np.zeros((B, L + 2, 4)))
  with pytest.raises(LabelError, match=r"labels have shape .* need \(16, 9\)"):
    tasks.validate_labels(spec, y[:, :-1], m)
  # In the step, outputs of another length are a trace-time error, not a silent broadcast.
  with pytest.raises(ValueError, match="sequence length"):
    losses.task_loss(spec, jnp.zeros((B, L + 1, K)), jnp.asarray(y), jnp.asarray(m))


def test_token_and_ranking_groups_stack_like_the_others():
  specs = (TaskSpec("ner", "token_classification", K), TaskSpec("b", "binary"),
           TaskSpec("pos", "token_classification", K), TaskSpec("rank", "ranking"),
           TaskSpec("ner2", "token_classification", K))
  groups = group_tasks(specs)
  assert [(g.key, g.names) for g in groups] == [
      (f"token_classification_{K}", ("ner", "pos", "ner2")), ("binary_1", ("b",)),
      ("ranking_1", ("rank",))]
  per, labels, mask = {}, {}, {}
  for name in ("ner", "pos", "ner2"):
    per[name], labels[name], mask[name] = _tokens()
  mask["pos"][:] = False  # a task with no labelled token contributes exactly 0
  per["b"] = RNG.normal(size=(B, 1)).astype(np.float32)
  labels["b"], mask["b"] = RNG.integers(0, 2, B), np.ones(B, bool)
  per["rank"] = RNG.normal(size=(B, 4, 1)).astype(np.float32)
  labels["rank"], mask["rank"] = RNG.integers(1, 3, (B, 4)).astype(np.float32), np.ones((B, 4), bool)
  outs = {g.key: jnp.stack([per[n] for n in g.names]) for g in groups}
  got = losses.task_losses(specs, groups, outs, labels, mask)
  want = [losses.task_loss(s, per[s.name], labels[s.name], mask[s.name]) for s in specs]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6)
  assert float(got[2]) == 0.0
