"""Mixed precision: bfloat16 compute with float32 parameters, optimizer state and losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from mtl_jax import precision, train


def test_unknown_dtype_names_the_key():
  with pytest.raises(ValueError, match=r"config.model.dtype='bf16' is not a dtype; valid: \['float32', 'bfloat16'"):
    precision.policy({"dtype": "bf16"})
  with pytest.raises(ValueError, match="config.model.param_dtype='half'"):
    precision.policy({"param_dtype": "half"})


def test_cast_keeps_integer_inputs():
  tree = {"ids": jnp.zeros(3, jnp.int32), "x": jnp.zeros(3, jnp.float32)}
  out = precision.cast_floating(tree, jnp.bfloat16)
  assert out["ids"].dtype == jnp.int32 and out["x"].dtype == jnp.bfloat16


def _run(tmp_path, name, **model):
  c = tiny_config()
  c.num_train_steps = 120
  c.checkpoint_every_steps = 0
  for k, v in model.items():
    c.model[k] = v
  res = train.train_and_evaluate(c, str(tmp_path / name))
  return res, train.final_params(str(tmp_path / name))


def test_bfloat16_compute_lands_near_float32(tmp_path):
  """Stated distance: test accuracy within 0.05 and loss within 5% of float32 after 120 steps."""
  f32, p32 = _run(tmp_path, "f32")
  bf16, pbf = _run(tmp_path, "bf16", dtype="bfloat16")
  assert all(np.asarray(x).dtype == np.float32 for x in jax.tree.leaves(pbf))
  for task in ("digit", "digit_ge5"):
    a, b = f32["test"][task], bf16["test"][task]
    assert abs(a["accuracy"] - b["accuracy"]) <= 0.05, (task, a, b)
    assert abs(a["loss"] - b["loss"]) <= 0.05 * a["loss"], (task, a, b)
  # Different programs: bf16 rounding must have changed something.
  assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(p32), jax.tree.leaves(pbf)))


def test_bfloat16_parameters_are_stored_as_asked(tmp_path):
  _, params = _run(tmp_path, "bfp", dtype="bfloat16", param_dtype="bfloat16")
  assert all(str(np.asarray(x).dtype) == "bfloat16" for x in jax.tree.leaves(params))


def test_bert_trunk_computes_in_model_dtype_unless_it_sets_its_own():
  """bert's inputs are token ids, which the policy does not cast: without inheriting
  ``model.dtype`` its matmuls would stay float32 on bf16-rounded weights."""
  import jax.numpy as jnp
  from mtl_jax.models import build_model
  from mtl_jax.tasks import TaskSpec, group_tasks
  groups = group_tasks([TaskSpec("t", "binary")])
  trunk = dict(name="bert", vocab_size=11, hidden_size=8, num_layers=1, num_heads=2,
               intermediate_size=16, max_position=8, pooling="cls")
  inputs = {"input_ids": jnp.ones((2, 4), jnp.int32), "attention_mask": jnp.ones((2, 4))}

  def dot_dtypes(model_config):
    model = build_model(model_config, groups)
    params = model.init(jax.random.PRNGKey(0), inputs)
    hlo = jax.jit(model.apply).lower(params, inputs).as_text()
    return model, {line.split("tensor<")[-1].split("x")[-1].rstrip(">") for line in
                   hlo.splitlines() if "dot_general" in line and "->" in line}

  model, dots = dot_dtypes({"sharing": "hard", "trunk": trunk, "dtype": "bfloat16"})
  assert model.trunk["dtype"] == "bfloat16" and "bf16" in dots  # (the head reads f32 features)
  model, dots = dot_dtypes({"sharing": "hard", "trunk": dict(trunk, dtype="float32"),
                            "dtype": "bfloat16"})
  assert model.trunk["dtype"] == "float32" and dots == {"f32"}  # an explicit trunk dtype wins
  model, dots = dot_dtypes({"sharing": "hard", "trunk": trunk})
  assert "dtype" not in model.trunk and dots == {"f32"}  # nothing injected without model.dtype
