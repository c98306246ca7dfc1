"""Cityscapes: semantic segmentation (7 classes) and depth, the second dense benchmark of
CAGrad, Nash-MTL and FAMO (128x256 images, 2975 train / 500 val).

  python -m mtl_jax.main --config=configs/cityscapes_mtl.py:nash_mtl \\
      --config.data.data_dir=/path/to/cityscapes --workdir=/tmp/cityscapes_nash

``data_dir`` is the preprocessed folder of MTAN's / LibMTL's instructions
(``train/`` and ``val/``, each with ``image``, ``label``, ``depth`` ``.npy``
files; docs/datasets.md). results.json holds the four metrics (segmentation
miou, pixel_accuracy; depth abs_err, rel_err) and ``delta_m`` against the
single-task baseline below (higher is better here; the papers print the
opposite sign).

The argument is ``METHOD[,ARCH][,runlocal]`` as in configs/nyuv2_mtl.py (the
same methods and architectures: ``mtan`` default, ``split``, ``single``,
``deeplab``); ``runlocal`` trains toy widths on ``dense_shapes`` (its
segmentation and depth tasks) for 4 steps.

Training as Nash-MTL's Cityscapes experiment: Adam lr 1e-4, batch 8, 200
epochs of 2975 images (74,400 steps); the differences listed in
configs/nyuv2_mtl.py apply (constant lr, GroupNorm, final-step metrics).

Published single-task baseline (the ``base`` of Nash-MTL's Cityscapes
``delta_fn``, "base results from CAGrad"; docs/references.md [v, code]):
mIoU 74.01, pixel accuracy 93.16, abs err 0.0125, rel err 27.77 (their rel
err unit, as our ``rel_err``: the mean of |d̂ - d| / d over valid pixels;
large because Cityscapes' depths are small disparities). No run on
Cityscapes has been made here, so no measured number is claimed.
"""

import ml_collections
from ml_collections import config_dict

from configs import nyuv2_mtl

SINGLE_TASK = {"segmentation": {"miou": 0.7401, "pixel_accuracy": 0.9316},
               "depth": {"abs_err": 0.0125, "rel_err": 27.77}}


def get_config(arg: str = "ew") -> ml_collections.ConfigDict:
  method, arch, runlocal = nyuv2_mtl.parse(arg, "configs/cityscapes_mtl.py")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = dict(name="cityscapes", data_dir=config_dict.placeholder(str))
  config.tasks = [dict(name="segmentation", kind="segmentation", num_outputs=7),
                  dict(name="depth", kind="depth")]
  config.model = nyuv2_mtl.model(arch, runlocal)
  config.weighting = nyuv2_mtl.WEIGHTINGS[method]
  config.optimizer = dict(name="adam", learning_rate=1e-4, schedule="constant")
  config.batch_size = 8
  config.eval_batch_size = 16
  config.num_train_steps = 74_400  # 200 epochs of 2975 images at batch 8
  config.log_every_steps = 400
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 4000
  config.keep_checkpoints = 2
  config.delta_m = dict(baseline=SINGLE_TASK)
  if runlocal:
    nyuv2_mtl.runlocal_on_dense_shapes(config)
  return config
