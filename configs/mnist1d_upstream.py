"""Upstream pretraining: the MNIST-1D CNN on digits 0-4 of a 10,000-signal pool.

  python -m mtl_jax.main --config=configs/mnist1d_upstream.py --workdir=/tmp/upstream

Its checkpoint is a backbone for configs/mnist1d_transfer.py (trunk blocks
``trunk/block_0..2``). Expected: test accuracy on digits 0-4 about 0.96
(experiments/transfer_scenarios: 96.3 ± 0.3 % over 5 seeds); ~20 s on 2 CPU
cores. ``:runlocal`` trains 300 steps.
"""

import ml_collections
from ml_collections import config_dict

from mtl_jax.config_validation import check_config_arg

CNN = dict(name="cnn", features=(25, 25, 25), kernel_sizes=(5, 3, 3), strides=(2, 2, 2))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  check_config_arg(arg, ("runlocal",), "configs/mnist1d_upstream.py")
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.data = dict(name="mnist1d", dataset_args={"num_samples": 10000}, classes=[0, 1, 2, 3, 4])
  c.tasks = [dict(name="digit", kind="multiclass", num_outputs=5)]
  c.model = dict(sharing="hard", trunk=dict(CNN))
  c.optimizer = dict(name="adam", learning_rate=3e-3, schedule="cosine")
  c.batch_size = 100
  c.eval_batch_size = 500
  c.num_train_steps = 3000
  c.log_every_steps = 500
  c.checkpoint_every_steps = 1000
  c.num_devices = config_dict.placeholder(int)  # None: every device; --config.num_devices=N
  if arg == "runlocal":
    c.num_train_steps = 300
  return c
