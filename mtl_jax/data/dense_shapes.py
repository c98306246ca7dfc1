"""``dense_shapes``: generated scenes with exact segmentation, depth and normals (no download).

A pinhole camera (focal length 1 in normalised image coordinates u, v in
[-1, 1], v pointing down) looks at a back wall, a sloped ground plane and
``num_objects`` planar shapes (rectangles and discs, tilted up to 34°) in
front of them. Every surface is a plane ``m . X = 1``, so along the ray
r = (u, v, 1) its depth is exactly ``1 / (m . r)`` and its normal is
``-m / |m|`` (camera coordinates, facing the camera); the nearest surface of
each pixel (a z-buffer) gives the three labels of the NYUv2 tasks exactly:

- ``segmentation``: 0 wall, 1 ground, 2..num_classes-1 the object classes
  (even classes are rectangles, odd ones discs, each with its own hue);
- ``depth``: z of the visible point (between ~1 and 12);
- ``normal``: the unit normal of the visible plane.

The image is Lambertian shading of each surface's albedo under one light per
scene (so normals show in the shading), a checkerboard on the ground in world
coordinates (so depth shows in the texture's perspective), plus pixel noise.
``missing_rate`` marks a share of each task's pixels as without ground truth
(-1, 0, (0,0,0)), as a sensor leaves holes in NYUv2's depth and normals.
Everything is a function of ``seed`` and the split; vectorised NumPy, about
0.1 s per 1000 images at 32x32. The generator is identified by its name and
options in the config, as the other generated datasets are.
"""

from typing import Dict, Tuple

import numpy as np

from mtl_jax.data.base import DATASETS, ArrayDataset, DataSplits, hide_labels

TASKS = ("segmentation", "depth", "normal")
WALL, GROUND = 0, 1
_CHUNK = 256  # images rendered at once (bounds the working memory at large sizes)


def _rotation(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
  """[..., 3, 3] rotations: pitch about x, then yaw about y."""
  cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
  one, zero = np.ones_like(yaw), np.zeros_like(yaw)
  ry = np.stack([np.stack([cy, zero, sy], -1), np.stack([zero, one, zero], -1),
                 np.stack([-sy, zero, cy], -1)], -2)
  rx = np.stack([np.stack([one, zero, zero], -1), np.stack([zero, cp, -sp], -1),
                 np.stack([zero, sp, cp], -1)], -2)
  return ry @ rx


def _class_colors(num_classes: int) -> np.ndarray:
  """[num_classes, 3] albedo: grey-ish wall and ground, saturated hues for objects."""
  colors = np.zeros((num_classes, 3))
  colors[WALL], colors[GROUND] = (0.55, 0.55, 0.6), (0.5, 0.45, 0.35)
  k = num_classes - 2
  hue = np.arange(k) / k
  colors[2:] = 0.5 + 0.45 * np.cos(2 * np.pi * (hue[:, None] - np.array([0.0, 1 / 3, 2 / 3])))
  return colors


def render(num: int, size: int, num_classes: int, num_objects: int,
           rng: np.random.Generator) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
  """Images float32 [num, size, size, 3] in ~[0, 1] and exact labels of the three tasks."""
  coords = (np.arange(size) + 0.5) / size * 2.0 - 1.0
  u, v = np.meshgrid(coords, coords)  # [S, S]; v down
  rays = np.stack([u, v, np.ones_like(u)], -1)  # [S, S, 3]

  # Planes m (m . X = 1) per scene: wall, ground, objects -> [N, P, 3]
  wall_depth = rng.uniform(7.0, 11.0, num)
  wall_m = _rotation(rng.uniform(-0.35, 0.35, num), np.zeros(num)) @ np.array([0.0, 0.0, 1.0])
  wall_m = wall_m / wall_depth[:, None]
  height = rng.uniform(0.8, 1.6, num)  # camera above the ground
  slope = rng.uniform(-0.25, 0.25, num)  # the ground tilts towards / away from the camera
  ground_m = np.stack([np.zeros(num), np.cos(slope), np.sin(slope)], -1) / height[:, None]
  obj_depth = rng.uniform(1.5, 5.0, (num, num_objects))
  centre = np.stack([rng.uniform(-0.7, 0.7, (num, num_objects)),
                     rng.uniform(-0.7, 0.4, (num, num_objects))], -1) * obj_depth[..., None]
  centre = np.concatenate([centre, obj_depth[..., None]], -1)  # [N, O, 3] a point of the plane
  rot = _rotation(rng.uniform(-0.6, 0.6, (num, num_objects)),
                  rng.uniform(-0.6, 0.6, (num, num_objects)))  # [N, O, 3, 3]
  normal_o = rot @ np.array([0.0, 0.0, -1.0])  # facing the camera
  obj_m = -normal_o / np.einsum("nok,nok->no", -normal_o, centre)[..., None]
  cls = rng.integers(2, num_classes, (num, num_objects))
  present = rng.random((num, num_objects)) < 0.85
  half = rng.uniform(0.3, 1.0, (num, num_objects, 2))  # world half-sizes / radius

  # Depth of every plane at every pixel: [N, P, S*S]; inf where the ray misses it
  flat = rays.reshape(-1, 3).T.astype(np.float32)  # [3, S*S]
  planes = np.concatenate([wall_m[:, None], ground_m[:, None], obj_m], 1).astype(np.float32)
  dots = planes @ flat
  depth = np.where(dots > 1e-6, 1.0 / np.maximum(dots, 1e-6), np.inf).astype(np.float32)
  # objects: inside the shape, in the plane's own axes (a, b) around its centre:
  # (z r - c) . e = z (r . e) - c . e
  axes = np.swapaxes(rot[..., :, :2], -1, -2).astype(np.float32)  # [N, O, 2, 3]
  ray_ab = axes @ flat  # [N, O, 2, S*S]
  c_ab = (axes @ centre[..., None].astype(np.float32))  # [N, O, 2, 1]
  z_obj = depth[:, 2:, None]
  ab = z_obj * ray_ab - c_ab
  hx, hy = half[..., 0, None].astype(np.float32), half[..., 1, None].astype(np.float32)
  a, b = ab[:, :, 0], ab[:, :, 1]
  rect = (np.abs(a) < hx) & (np.abs(b) < hy)
  disc = a * a + b * b < hx * hx
  inside = np.where((cls % 2 == 0)[..., None], rect, disc) & present[..., None]
  depth[:, 2:] = np.where(inside, depth[:, 2:], np.inf)
  shape = (num, size, size)

  nearest = depth.argmin(1)  # [N, S*S] index of the visible plane
  z = np.take_along_axis(depth, nearest[:, None], 1)[:, 0].reshape(shape)
  nearest = nearest.reshape(shape)
  plane_cls = np.concatenate([np.full((num, 1), WALL), np.full((num, 1), GROUND), cls], 1)
  seg = np.take_along_axis(plane_cls, nearest.reshape(num, -1), 1).reshape(nearest.shape)
  m = np.take_along_axis(planes, nearest.reshape(num, -1, 1), 1).reshape(nearest.shape + (3,))
  normal = (-m / np.linalg.norm(m, axis=-1, keepdims=True)).astype(np.float32)

  # Image: albedo x (ambient + Lambert), ground checkerboard, noise
  albedo = (_class_colors(num_classes).astype(np.float32)[seg]
            * rng.uniform(0.8, 1.2, (num, 1, 1, 3)).astype(np.float32))
  checker = (np.floor(z * u * 2.0) + np.floor(z * 2.0)) % 2  # world x, z on a 0.5 grid
  albedo *= np.where(seg == GROUND, 0.7 + 0.3 * checker, 1.0)[..., None].astype(np.float32)
  light = 0.5 * rng.normal(size=(num, 3)) + np.array([0.0, -1.5, -2.0])  # towards the light:
  light /= np.linalg.norm(light, axis=-1, keepdims=True)  # up and behind the camera
  lit = (normal.reshape(num, -1, 3) @ light[:, :, None].astype(np.float32)).reshape(shape)
  shade = 0.35 + 0.65 * np.clip(lit, 0.0, None)
  noise = rng.standard_normal(albedo.shape, dtype=np.float32) * np.float32(0.02)
  image = albedo * shade[..., None].astype(np.float32) + noise
  labels = {"segmentation": seg.astype(np.int32), "depth": z.astype(np.float32),
            "normal": normal.astype(np.float32)}
  return image.astype(np.float32), labels


def _drop_pixels(labels: Dict[str, np.ndarray], rate: float, rng: np.random.Generator) -> None:
  """Marks a share ``rate`` of each task's pixels as without ground truth, in place."""
  if not rate:
    return
  shape = labels["segmentation"].shape
  labels["segmentation"][rng.random(shape) < rate] = -1
  labels["depth"][rng.random(shape) < rate] = 0.0
  labels["normal"][rng.random(shape) < rate] = 0.0


def make_split(num: int, size: int, num_classes: int, num_objects: int, missing_rate: float,
               seed: int, split: int) -> ArrayDataset:
  """One split, rendered in chunks of ``_CHUNK`` images (each chunk its own seeded stream)."""
  images, labels = [], {t: [] for t in TASKS}
  for c, start in enumerate(range(0, num, _CHUNK)):
    rng = np.random.default_rng([seed, split, c])
    x, y = render(min(_CHUNK, num - start), size, num_classes, num_objects, rng)
    _drop_pixels(y, missing_rate, rng)
    images.append(x)
    for t in TASKS:
      labels[t].append(y[t])
  if not images:
    return ArrayDataset(np.zeros((0, size, size, 3), np.float32),
                        {"segmentation": np.zeros((0, size, size), np.int32),
                         "depth": np.zeros((0, size, size), np.float32),
                         "normal": np.zeros((0, size, size, 3), np.float32)},
                        {t: np.zeros(0, bool) for t in TASKS})
  labels = {t: np.concatenate(v) for t, v in labels.items()}
  return ArrayDataset(np.concatenate(images), labels, {t: np.ones(num, bool) for t in TASKS})


def _check_options(size, num_classes, num_objects, missing_rate, hide_rate, counts):
  def bad(name, value, valid):
    raise ValueError(f"dense_shapes: {name}={value!r} must be {valid}")
  for name, value, lo in (("size", size, 4), ("num_classes", num_classes, 3),
                          ("num_objects", num_objects, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
      bad(name, value, f"an integer >= {lo}")
  for name, value in counts.items():
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
      bad(name, value, "an integer >= 0")
  if counts["num_train"] < 1 or counts["num_validation"] < 1:
    raise ValueError(f"dense_shapes: num_train and num_validation must be >= 1, got {counts}")
  if not 0.0 <= missing_rate < 1.0:
    bad("missing_rate", missing_rate, "a rate in [0, 1)")
  if not 0.0 <= hide_rate < 1.0:
    bad("hide_rate", hide_rate, "a rate in [0, 1)")


@DATASETS.register("dense_shapes")
def dense_shapes(size: int = 32, num_train: int = 1000, num_validation: int = 200,
                 num_test: int = 200, num_classes: int = 6, num_objects: int = 5,
                 missing_rate: float = 0.0, hide_rate: float = 0.0, seed: int = 0) -> DataSplits:
  """Tasks ``segmentation`` (kind segmentation, ``num_classes`` classes), ``depth``
  (kind depth) and ``normal`` (kind normals) on ``size`` x ``size`` RGB scenes.

  ``hide_rate`` hides each task's train labels per example (mask False);
  validation and test keep every label.
  """
  counts = dict(num_train=num_train, num_validation=num_validation, num_test=num_test)
  _check_options(size, num_classes, num_objects, missing_rate, hide_rate, counts)
  splits = [make_split(n, size, num_classes, num_objects, missing_rate, seed, k)
            for k, n in enumerate(counts.values())]
  rng = np.random.default_rng([seed, 99])
  splits[0].mask.update({t: hide_labels(m, hide_rate, rng) for t, m in splits[0].mask.items()})
  return DataSplits(splits[0], splits[1], splits[2] if num_test else None)
