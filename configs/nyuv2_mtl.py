"""NYUv2: semantic segmentation (13 classes), depth and surface normals from one image, the
benchmark of MTAN, CAGrad, Nash-MTL, FAMO and LibMTL.

  python -m mtl_jax.main --config=configs/nyuv2_mtl.py:nash_mtl \\
      --config.data.data_dir=/path/to/nyuv2 --workdir=/tmp/nyuv2_nash

``data_dir`` is the preprocessed folder of MTAN's / LibMTL's instructions
(``train/`` and ``val/``, each with ``image``, ``label``, ``depth``, ``normal``
``.npy`` files; docs/datasets.md); nothing is downloaded. results.json holds
the nine metrics of the three tasks (segmentation miou, pixel_accuracy; depth
abs_err, rel_err; normal mean_angle, median_angle, within_11_25/22_5/30) and
``delta_m``: Δm% against the published single-task SegNet (below; higher is
better here, the sign of Maninis et al. and LibMTL: the Nash-MTL, CAGrad and
FAMO tables print the opposite sign).

The argument is ``METHOD[,ARCH][,runlocal]``. METHOD: ew (equal weights),
uncertainty, dwa, gradnorm, rlw, famo, mgda, pcgrad, cagrad, nash_mtl, upgrad,
imtl_g, aligned_mtl, graddrop. ARCH: ``mtan`` (default; the setup of the
Nash-MTL/CAGrad/FAMO tables: MTAN's SegNet + attention, MTAN's prediction
layers), ``split`` (one shared SegNet, per-task prediction layers: MTAN's
"split" = hard sharing), ``single`` (one SegNet per task: the Δm% baseline),
``deeplab`` (LibMTL's HPS: a dilated ResNet encoder, output stride 8, and a
DeepLabV3 ASPP decoder per task, outputs upsampled to 288x384).
``runlocal``: the same model family at toy widths on ``dense_shapes`` (32x32
generated scenes, 6 classes), 4 steps, for smoke tests.

Training as MTAN / Nash-MTL: Adam lr 1e-4, batch 2, 200 epochs of the 795
train images (79,500 steps), test = the 654 val images; ``deeplab`` as LibMTL's
``examples/nyu/main.py``: batch 8, 200 epochs (19,800 steps). Differences: MTAN
halves the lr at epoch 100 (StepLR), here the lr is constant (the schedules
are constant | cosine | linear); GroupNorm replaces BatchNorm (docs/dense.md);
Nash-MTL averages the test metrics of the last 10 epochs, we report the final
step's; LibMTL's encoder is a ResNet-50 (bottleneck units) pretrained on
ImageNet, ``deeplab`` here is our basic-unit ResNet-18 from scratch unless
``init_from`` gives a checkpoint (docs/dense.md: a ``resnet`` classification
checkpoint loads into ``dilated_resnet`` unchanged).

Published test metrics (docs/references.md, "NYUv2 and Cityscapes" [v] /
[mem] tags there; Δm% recomputed with our sign, higher = better):

  method            mIoU  pix acc  abs err  rel err  mean  median  <11.25  <22.5  <30   Δm%
  single task       38.30  63.76   0.6754   0.2780   25.01  19.21   30.14   57.20  69.15   0
  LS (EW, MTAN)     39.29  65.33   0.5493   0.2263   28.15  23.96   22.09   47.50  61.08  -5.59
  Nash-MTL (MTAN)   40.13  65.93   0.5261   0.2171   25.26  20.08   28.40   55.47  68.15  +4.04

No run on NYUv2 has been made here (the data is not available offline), so
no measured number is claimed; ``:METHOD,runlocal`` is what the tests run.
"""

import ml_collections
from ml_collections import config_dict

from mtl_jax.config_validation import ConfigError

WEIGHTINGS = {
    "ew": None, "uncertainty": dict(name="uncertainty"), "dwa": dict(name="dwa"),
    "gradnorm": dict(name="gradnorm"), "rlw": dict(name="rlw"), "famo": dict(name="famo"),
    "mgda": dict(aggregator="mgda"), "pcgrad": dict(aggregator="pcgrad"),
    "cagrad": dict(aggregator="cagrad"), "nash_mtl": dict(aggregator="nash_mtl"),
    "upgrad": dict(aggregator="upgrad"), "imtl_g": dict(aggregator="imtl_g"),
    "aligned_mtl": dict(aggregator="aligned_mtl"), "graddrop": dict(aggregator="graddrop"),
}
ARCHS = ("mtan", "split", "single", "deeplab")
# The single-task SegNet of CAGrad / Nash-MTL (the BASE of Nash-MTL's delta_fn); fractions as
# our metrics report them (percentages / 100).
SINGLE_TASK = {
    "segmentation": {"miou": 0.3830, "pixel_accuracy": 0.6376},
    "depth": {"abs_err": 0.6754, "rel_err": 0.2780},
    "normal": {"mean_angle": 25.01, "median_angle": 19.21, "within_11_25": 0.3014,
               "within_22_5": 0.5720, "within_30": 0.6915},
}


def parse(arg: str, config_file: str, archs=ARCHS):
  """(method, arch, runlocal) from ``METHOD[,ARCH][,runlocal]``; unknown parts are errors."""
  items = [a for a in (arg or "").split(",") if a]
  runlocal = "runlocal" in items
  rest = [a for a in items if a != "runlocal"]
  methods = [a for a in rest if a in WEIGHTINGS]
  arch = [a for a in rest if a in archs]
  bad = [a for a in rest if a not in WEIGHTINGS and a not in archs]
  if bad or len(methods) > 1 or len(arch) > 1:
    raise ConfigError(f"{config_file}: argument {arg!r}; valid: METHOD[,ARCH][,runlocal] with "
                      f"METHOD one of {list(WEIGHTINGS)}, ARCH one of {list(archs)}")
  return (methods[0] if methods else "ew"), (arch[0] if arch else archs[0]), runlocal


def model(arch: str, runlocal: bool):
  """The model of ``arch``, at MTAN's / LibMTL's widths, or toy widths with ``runlocal``."""
  segnet = (dict(name="segnet", features=(4, 8, 8), convs_per_level=(1, 1, 2), norm_groups=2)
            if runlocal else dict(name="segnet"))
  if arch == "deeplab":
    trunk = (dict(name="dilated_resnet", features=(4, 4, 8, 8), units_per_stage=(1, 1, 1, 1),
                  stem_features=4, norm_groups=2) if runlocal else dict(name="dilated_resnet"))
    decoder = (dict(name="aspp", features=8, rates=(1, 2, 3), norm_groups=2) if runlocal
               else dict(name="aspp"))
    return dict(sharing="hard", trunk=trunk, decoder=decoder)
  sharing = {"mtan": "mtan", "split": "hard", "single": "single_task"}[arch]
  return dict(sharing=sharing, trunk=segnet, decoder=dict(name="conv"))


def get_config(arg: str = "ew") -> ml_collections.ConfigDict:
  method, arch, runlocal = parse(arg, "configs/nyuv2_mtl.py")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.data = dict(name="nyuv2", data_dir=config_dict.placeholder(str))
  config.tasks = [dict(name="segmentation", kind="segmentation", num_outputs=13),
                  dict(name="depth", kind="depth"),
                  dict(name="normal", kind="normals", num_outputs=3)]
  config.model = model(arch, runlocal)
  config.weighting = WEIGHTINGS[method]
  config.optimizer = dict(name="adam", learning_rate=1e-4, schedule="constant")
  config.batch_size = 2
  config.eval_batch_size = 8
  config.num_train_steps = 79_500  # 200 epochs of 795 images at batch 2
  config.log_every_steps = 400
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 4000
  config.keep_checkpoints = 2
  config.delta_m = dict(baseline=SINGLE_TASK)
  if arch == "deeplab":  # LibMTL's examples/nyu/main.py: train_bs 8, 200 epochs
    config.batch_size = 8
    config.num_train_steps = 19_800  # 200 epochs of 795 images at batch 8 (drop_last: 99)
    config.log_every_steps = 99
    config.checkpoint_every_steps = 990
  if runlocal:
    runlocal_on_dense_shapes(config)
  return config


def runlocal_on_dense_shapes(config: ml_collections.ConfigDict) -> None:
  """``:runlocal``: a few steps on tiny generated scenes (no data folder), same model."""
  config.data = dict(name="dense_shapes", size=32, num_train=16, num_validation=4,
                     num_test=4, num_classes=6)
  config.tasks[0]["num_outputs"] = 6
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_train_steps = 4
  config.log_every_steps = 2
  config.checkpoint_every_steps = 0
