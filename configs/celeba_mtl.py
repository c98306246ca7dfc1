"""CelebA, 40 binary attributes as 40 tasks, ResNet-18 trunk (Sener & Koltun, NeurIPS 2018).

The standard many-task vision benchmark of "Multi-Task Learning as
Multi-Objective Optimization" (Sener & Koltun 2018, Sec. 6 and Table 3):
one hard-shared ResNet-18 (GroupNorm here, docs/vision.md) on 64x64 images
(the whole 218x178 photo resized, as in the paper), one logit per attribute,
the official train / validation / test partition (TFDS ``celeb_a``).
11,189,352 parameters: the trunk (3x3 stride-1 stem for the small images)
11,168,832, the 40 heads 40 x 513.

  python -m mtl_jax.main --config=configs/celeba_mtl.py:uniform \
      --config.data.data_dir=/path/to/tensorflow_datasets --workdir=/tmp/celeba

The dataset must already be prepared there as array_record (nothing is
downloaded at training time): ``tfds build celeb_a --data_dir=...
--file_format=array_record``, where TensorFlow is installed (the images are
JPEGs; TFDS also needs the manually placed Google Drive files).

The argument is ``METHOD[,runlocal]``, METHOD one of uniform (default, equal
weights), uncertainty (Kendall et al. 2018), gradnorm (Chen et al. 2018) or
mgda_ub (MGDA on the shared representation, the paper's method).
``runlocal`` shrinks everything (16x16 images, 64 examples per split, a
narrow ResNet, 2 steps) for smoke tests.

Published average test error over the 40 attributes, % (Sener & Koltun 2018,
Table 3; as recorded in docs/references.md, where they are marked as
quoted from memory: check them against the paper before citing):

  single task      10.38
  uniform scaling   9.62
  uncertainty       9.53   (Kendall et al. 2018)
  GradNorm          8.44   (Chen et al. 2018)
  MGDA-UB           8.25

The optimizer, batch size and step count below are this config's choices
(Adam, 256 images, ~30 epochs), not the paper's; no full run has been made
here, so no measured error is claimed.
"""

import ml_collections
from ml_collections import config_dict

from mtl_jax.config_validation import ConfigError
from mtl_jax.data.celeb_a import ATTRIBUTES

WEIGHTINGS = {
    "uniform": None,
    "uncertainty": dict(name="uncertainty"),
    "gradnorm": dict(name="gradnorm"),
    "mgda_ub": dict(aggregator="mgda", mode="representation"),
}


def get_config(arg: str = "uniform") -> ml_collections.ConfigDict:
  items = [a for a in (arg or "").split(",") if a]
  runlocal = "runlocal" in items
  methods = [a for a in items if a != "runlocal"]
  if len(methods) > 1 or any(m not in WEIGHTINGS for m in methods):
    raise ConfigError(f"configs/celeba_mtl.py: argument {arg!r}; valid: METHOD[,runlocal] with "
                      f"METHOD one of {list(WEIGHTINGS)}")
  method = methods[0] if methods else "uniform"

  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = dict(name="celeb_a", image_size=64, crop="none",
                     data_dir=config_dict.placeholder(str), max_examples=None)
  config.tasks = [dict(name=a, kind="binary") for a in ATTRIBUTES]
  config.model = dict(sharing="hard", trunk=dict(name="resnet", features=(64, 128, 256, 512),
                                                 units_per_stage=(2, 2, 2, 2), stem="cifar"))
  config.weighting = WEIGHTINGS[method]
  config.optimizer = dict(name="adam", learning_rate=1e-3, schedule="cosine")
  config.param_groups = [(".*", 1.0)]
  config.batch_size = 256
  config.eval_batch_size = 1024
  config.num_train_steps = 20_000  # ~31 epochs of the 162,770 train images
  config.log_every_steps = 100
  config.eval_every_steps = 2000
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 2
  config.num_devices = config_dict.placeholder(int)
  config.progress_bar = True
  if runlocal:
    config.data.image_size = 16
    config.data.max_examples = 64
    config.model.trunk.features = (8, 16, 16, 16)
    config.model.trunk.stem_features = 8
    config.batch_size = 8
    config.eval_batch_size = 32
    config.num_train_steps = 2
    config.log_every_steps = 1
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 0
  return config
