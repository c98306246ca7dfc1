"""init_from.heads: one task's row of a stacked head (or another task's) loads bitwise.

The source model stacks digit_ge5 and parity in one ``heads/binary_1`` tensor
(with a hidden tower); a downstream model takes one of those rows into its
own task's row, the encoder with ``load``, and nothing else.
"""

import jax
import numpy as np
import pytest

from conftest import flat_params, tiny_config
from mtl_jax import partial_load, run, train


def _config(tasks, **kw):
  c = tiny_config()
  c.tasks = tasks
  c.model.head_hidden = (8,)
  c.num_train_steps = 4
  for k, v in kw.items():
    c[k] = v
  return c


BINARY = lambda name: dict(name=name, kind="binary")  # noqa: E731
SOURCE_TASKS = [dict(name="digit", kind="multiclass", num_outputs=10), BINARY("digit_ge5"),
                BINARY("parity")]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("source"))
  train.train_and_evaluate(_config(SOURCE_TASKS), workdir)
  return workdir, partial_load.load_checkpoint_params(workdir)


def _built(config, num_seeds=1):
  config.num_seeds = num_seeds
  return run.build_program(config, np.zeros((1, 40), np.float32))


@pytest.mark.parametrize("target,src,num_seeds", [("parity", "parity", 1),
                                                  ("digit_ge5", "parity", 1),
                                                  ("parity", "digit_ge5", 2)])
def test_row_of_a_stacked_head_loads_bitwise(source, target, src, num_seeds):
  workdir, loaded = source
  c = _config([BINARY("other"), BINARY(target)],
              init_from=dict(workdir=workdir, load="trunk/.*", heads={target: src}))
  fresh = flat_params(jax.device_get(_built(_config([BINARY("other"), BINARY(target)]),
                                            num_seeds).state.params))
  got = flat_params(jax.device_get(_built(c, num_seeds).state.params))
  row = 1  # target is the second task of its group
  src_row = ["digit_ge5", "parity"].index(src)
  for layer in ("heads/binary_1", "heads/binary_1_hidden_0"):
    for w in ("kernel", "bias"):
      p = f"{layer}/{w}"
      rows = [got[p]] if num_seeds == 1 else list(got[p])
      for r in rows:
        np.testing.assert_array_equal(r[row], loaded[p][src_row])   # loaded, bitwise
        assert not np.array_equal(r[0], loaded[p][0])               # 'other' stays fresh
      base = fresh[p] if num_seeds == 1 else fresh[p][0]
      np.testing.assert_array_equal(rows[0][0], base[0])
  for p in loaded:
    if p.startswith("trunk/"):
      trunk = got[p] if num_seeds == 1 else got[p][num_seeds - 1]
      np.testing.assert_array_equal(trunk, loaded[p])


def test_heads_errors_name_the_culprit(source, tmp_path):
  workdir, _ = source
  init = lambda heads: dict(workdir=workdir, load="trunk/.*", heads=heads)  # noqa: E731
  with pytest.raises(ValueError, match=r"source tasks \['rte'\] are not in the checkpoint's "
                     r"config; it has tasks \['digit', 'digit_ge5', 'parity'\]"):
    _built(_config([BINARY("parity")], init_from=init({"parity": "rte"})))
  with pytest.raises(ValueError, match=r"target tasks \['nope'\] are not tasks of this model; "
                     r"its tasks: \['parity'\]"):
    _built(_config([BINARY("parity")], init_from=init({"nope": "parity"})))
  with pytest.raises(partial_load.CheckpointMismatchError,
                     match=r"parity <- digit: heads/binary_1/kernel row \(8, 1\), checkpoint "
                     r"heads/multiclass_10/kernel row \(8, 10\)"):
    _built(_config([BINARY("parity")], init_from=init({"parity": "digit"})))
  with pytest.raises(ValueError, match="init_from.load selects head parameters"):
    _built(_config([BINARY("other"), BINARY("parity")],
                   init_from=dict(workdir=workdir, heads={"parity": "parity"},
                                  load="(trunk|heads/binary_1)/.*")))
  bare = tmp_path / "bare"
  bare.mkdir()
  with pytest.raises(FileNotFoundError, match="config.json does not exist"):
    partial_load.source_groups(str(bare))
