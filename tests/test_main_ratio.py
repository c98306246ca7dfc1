"""MT-DNN's main-task ratio (config.mixing.main / ratio): probabilities and sampled counts."""

import ml_collections
import numpy as np
import pytest

from mtl_jax.data import mixing
from mtl_jax.data.base import ArrayDataset
from mtl_jax.tasks import TaskSpec


def _src(alias, n):
  other = "aux" if alias == "main" else "main"
  ds = ArrayDataset(np.zeros((n, 2), np.float32), {alias: np.zeros(n, np.int32),
                                                   other: np.zeros(n, np.int32)},
                    {alias: np.ones(n, bool), other: np.zeros(n, bool)})
  return mixing.Source(alias, "x", (alias,), None, {"train": ds})


def _opts(**kw):
  c = ml_collections.ConfigDict()
  c.mixing = kw
  return mixing.mixing_options(c)


def test_probabilities_follow_mt_dnn_ratio():
  sources = [_src("a", 300), _src("main", 100), _src("b", 100)]
  p = mixing.main_ratio_weights(sources, _opts(main="main", ratio=0.5))
  # main: 1/(1+0.5); the auxiliaries share 0.5/1.5 proportionally to 300:100.
  np.testing.assert_allclose(p, [0.75 / 3, 2 / 3, 0.25 / 3])
  # ratio beyond what the auxiliaries hold is capped: r' = 400/100 = 4.
  p = mixing.main_ratio_weights(sources, _opts(main="main", ratio=10.0, sampling="uniform"))
  np.testing.assert_allclose(p, [0.4, 0.2, 0.4])


def test_sampler_draws_ratio_aux_batches_per_main_batch():
  sources = [_src("main", 64), _src("aux", 640)]
  c = ml_collections.ConfigDict(dict(mixing=dict(main="main", ratio=2.0), num_train_steps=3000))
  specs = [TaskSpec("main", "binary"), TaskSpec("aux", "binary")]
  phases = mixing.build_phases(c, sources, specs)
  it = mixing.MixtureIterator(sources, phases, 8, seed=0, mixed=False)
  for _ in range(3000):
    next(it)
  consumed = it.get_state()["consumed"]
  assert consumed["aux"] / consumed["main"] == pytest.approx(2.0, rel=0.1)


def test_ratio_errors():
  sources = [_src("main", 10), _src("aux", 10)]
  with pytest.raises(ValueError, match="main and config.mixing.ratio go together"):
    _opts(main="main")
  with pytest.raises(ValueError, match="ratio must be > 0"):
    _opts(main="main", ratio=0.0)
  with pytest.raises(ValueError, match=r"main='rte' is not a dataset alias; datasets: "
                     r"\['main', 'aux'\]"):
    mixing.main_ratio_weights(sources, _opts(main="rte", ratio=1.0))
  c = ml_collections.ConfigDict(dict(mixing=dict(main="main", ratio=1.0), num_train_steps=2,
                                     stages=[dict(steps=2, tasks=["main"])]))
  with pytest.raises(ValueError, match="does not combine with config.stages"):
    mixing.build_phases(c, sources, [])
