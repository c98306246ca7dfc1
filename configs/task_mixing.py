"""Three datasets of very different sizes, one task each, mixed by temperature sampling.

"big" (MNIST-1D, 10,000 train signals) labels ``digit``, "mid" (1,000)
labels ``parity``, "small" (100) labels ``digit_ge5``; each dataset has its
own generator seed and splits, and is evaluated on its own validation / test
split. Mixed batches: each batch draws its examples from the datasets by a
multinomial with p ∝ n^(1/2). ``:stages`` trains the same tasks ERNIE 2.0
style instead: one new task per stage, 30% of the batches replay earlier
tasks. See docs/datasets.md and experiments/task_mixing.

  python -m mtl_jax.main --config=configs/task_mixing.py --workdir=/tmp/mix
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.datasets = [
      dict(name="mnist1d", alias="big", tasks=["digit"], train_per_class=1000,
           dataset_args=dict(num_samples=14000, seed=11)),
      dict(name="mnist1d", alias="mid", tasks=["parity"], train_per_class=100,
           dataset_args=dict(num_samples=3000, seed=12)),
      dict(name="mnist1d", alias="small", tasks=["digit_ge5"], train_per_class=10,
           dataset_args=dict(num_samples=3000, seed=13)),
  ]
  config.tasks = [
      dict(name="digit", kind="multiclass", num_outputs=10),
      dict(name="parity", kind="binary"),
      dict(name="digit_ge5", kind="binary"),
  ]
  config.mixing = dict(sampling="temperature", temperature=2.0, batches="mixed",
                       task_embedding=False)
  config.model = dict(sharing="hard", trunk=dict(name="mlp", features=(128, 128)))
  config.optimizer = dict(name="adam", learning_rate=2e-3, schedule="cosine")
  config.batch_size = 64
  config.eval_batch_size = 500
  config.num_train_steps = 1000
  config.log_every_steps = 100
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.progress_bar = True
  if arg == "stages":
    config.mixing.sampling = "uniform"
    config.stages = [dict(steps=300, tasks=["digit"]),
                     dict(steps=300, tasks=["parity"], replay=0.3),
                     dict(steps=400, datasets=["small"], replay=0.3)]
  return config
