"""Dict (pytree) inputs through the pipeline and shard_batch on 8 simulated devices.

The device count must be set in XLA_FLAGS before JAX is imported, so the
check runs in one child process (as tests/test_parallel.py does).
"""

import os
import subprocess
import sys
import textwrap

from conftest import child_env

HERE = os.path.dirname(os.path.abspath(__file__))

CHILD = textwrap.dedent("""
  import os
  os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
  import jax
  import jax.numpy as jnp
  import numpy as np
  from mtl_jax import losses, parallel
  from mtl_jax.data.base import ArrayDataset
  from mtl_jax.data.pipeline import TrainIterator, eval_batches
  from mtl_jax.tasks import TaskSpec, group_tasks

  assert jax.device_count() == 8, jax.devices()
  N, L, K, B = 40, 6, 3, 16
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 50, (N, L)).astype(np.int32)
  lengths = rng.integers(1, L + 1, N)
  attn = (np.arange(L)[None] < lengths[:, None]).astype(np.int32)
  tok_mask = attn.astype(bool) & (rng.random((N, L)) > 0.2)
  ds = ArrayDataset({"input_ids": ids, "attention_mask": attn, "token_type_ids": ids % 2},
                    {"ner": np.where(tok_mask, rng.integers(0, K, (N, L)), -100),
                     "b": rng.integers(0, 2, N)},
                    {"ner": tok_mask, "b": rng.random(N) > 0.3})
  specs = (TaskSpec("ner", "token_classification", K), TaskSpec("b", "binary"))
  groups = group_tasks(specs)
  w = jnp.linspace(0.1, 1.0, K)

  def model(inputs):  # a toy trunk + heads that read every input leaf
    x = inputs["input_ids"].astype(jnp.float32) + 0.5 * inputs["token_type_ids"]
    tok = jnp.sin(x[..., None] * w) * inputs["attention_mask"][..., None]
    pooled = tok.sum((1, 2)) / 10.0
    return {"token_classification_3": tok[None], "binary_1": pooled[None, :, None]}

  step = jax.jit(lambda b: losses.task_losses(specs, groups, model(b["inputs"]), b["labels"], b["mask"]))
  mesh = parallel.make_mesh()
  it = TrainIterator(ds, B, seed=0)
  for _ in range(3):
    batch = next(it)
    sharded = parallel.shard_batch(batch, mesh)
    for path, leaf in jax.tree_util.tree_leaves_with_path(sharded):
      where = jax.tree_util.keystr(path)
      assert leaf.sharding == parallel.data_sharding(mesh), where
      shards = sorted(leaf.addressable_shards, key=lambda s: s.index[0].start)
      assert len(shards) == 8, where
      host = jax.tree_util.tree_leaves_with_path(batch)
      ref = dict((jax.tree_util.keystr(p), x) for p, x in host)[where]
      for i, s in enumerate(shards):  # device i holds rows 2i, 2i+1 of every leaf
        np.testing.assert_array_equal(np.asarray(s.data), ref[2 * i:2 * i + 2], err_msg=where)
    jax.tree.map(np.testing.assert_array_equal, parallel.fetch(sharded), batch)
    one = jax.device_put(batch, jax.devices()[0])
    np.testing.assert_allclose(np.asarray(step(sharded)), np.asarray(step(one)), rtol=1e-6)
  padded = list(eval_batches(ds, B))[-1]  # 40 = 2*16 + 8: half the last batch is padding
  out = parallel.fetch(jax.jit(model)(parallel.shard_batch(padded["inputs"], mesh)))
  assert out["token_classification_3"].shape == (1, B, L, K)
  assert not padded["mask"]["ner"][8:].any() and padded["mask"]["ner"][:8].any()
  print("PYTREE_SHARDING_OK")
""")


def test_dict_batches_shard_on_the_data_axis_of_8_devices():
  env = child_env()
  proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                        timeout=300, cwd=os.path.dirname(HERE))
  assert proc.returncode == 0, proc.stderr[-5000:]
  assert "PYTREE_SHARDING_OK" in proc.stdout
