"""The per-pixel kinds (segmentation, depth, normals) against NumPy / SciPy oracles.

Oracles are written differently from the kinds: IoU from boolean masks per
class (not a confusion matrix), angles by atan2(|a x b|, a . b) (not arccos),
the median by np.median over all pixels (not a histogram), cross-entropy by
scipy's log_softmax. Evaluation runs through ``evaluation.evaluate`` in padded
batches, so the streamed sums, the stacked heads' batch axis and the padding
rows are all on the path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax

from mtl_jax import evaluation, kinds, losses, metrics, parallel, tasks
from mtl_jax.data.base import ArrayDataset
from mtl_jax.kinds import normals as normals_kind
from mtl_jax.kinds.segmentation import remap_ignore
from mtl_jax.models.heads import TaskHeads
from mtl_jax.tasks import LabelError, TaskSpec

N, H, W, K = 7, 5, 6, 4
SPECS = tasks.specs_from_config([dict(name="seg", kind="segmentation", num_outputs=K),
                                 dict(name="depth", kind="depth"),
                                 dict(name="normal", kind="normals", num_outputs=3)])
SEG, DEPTH, NORMAL = SPECS


@pytest.fixture(scope="module")
def split():
  """Outputs and labels of N images with ignored / missing pixels, and example masks
  (example 2 unlabelled for segmentation, 5 for depth; their labels are junk)."""
  rng = np.random.default_rng(0)
  out = {"seg": rng.normal(size=(N, H, W, K)).astype(np.float32),
         "depth": rng.uniform(0.5, 3.0, (N, H, W, 1)).astype(np.float32),
         "normal": rng.normal(size=(N, H, W, 3)).astype(np.float32)}
  seg = rng.integers(0, K - 1, (N, H, W))  # class K-1 never labelled: absent unless predicted
  seg[rng.random((N, H, W)) < 0.2] = -1
  depth = rng.uniform(0.5, 3.0, (N, H, W)).astype(np.float32)
  depth[rng.random((N, H, W)) < 0.2] = 0.0
  n = rng.normal(size=(N, H, W, 3))
  n = (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)
  n[rng.random((N, H, W)) < 0.2] = 0.0
  labels = {"seg": seg, "depth": depth, "normal": n}
  mask = {k: np.ones(N, bool) for k in labels}
  mask["seg"][2] = False
  seg[2] = 99  # junk under mask=False
  mask["depth"][5] = False
  depth[5] = np.nan
  return out, labels, mask


def _oracle_seg(o, y, m):
  o, y = o[m].astype(np.float64), y[m]
  valid = y >= 0
  logp = log_softmax(o, axis=-1)
  ce = -np.take_along_axis(logp, np.where(valid, y, 0)[..., None], -1)[..., 0]
  pred = o.argmax(-1)
  ious = []
  for c in range(K):
    inter = ((pred == c) & (y == c) & valid).sum()
    union = (((pred == c) | (y == c)) & valid).sum()
    if union:
      ious.append(inter / union)
  return {"loss": ce[valid].mean(), "miou": np.mean(ious),
          "pixel_accuracy": (pred == y)[valid].mean()}


def _oracle_depth(o, y, m):
  o, y = o[m][..., 0].astype(np.float64), y[m].astype(np.float64)
  v = y != 0
  err = np.abs(o[v] - y[v])
  return {"loss": err.mean(), "abs_err": err.mean(), "rel_err": (err / y[v]).mean()}


def _oracle_normal(o, y, m):
  o, y = o[m].astype(np.float64), y[m].astype(np.float64)
  v = np.linalg.norm(y, axis=-1) > 0
  a, b = o[v], y[v]
  ang = np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1)))
  cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
  return {"loss": (1 - cos).mean(), "mean_angle": ang.mean(), "median_angle": np.median(ang),
          "within_11_25": (ang < 11.25).mean(), "within_22_5": (ang < 22.5).mean(),
          "within_30": (ang < 30).mean()}


ORACLES = {"seg": _oracle_seg, "depth": _oracle_depth, "normal": _oracle_normal}


def _check(got, want, name):
  tol = {"median_angle": normals_kind.MEDIAN_BIN}
  for m, v in want.items():
    np.testing.assert_allclose(got[m], v, rtol=1e-6, atol=tol.get(m, 1e-9),
                               err_msg=f"{name}/{m}")


def test_losses_match_the_oracles_with_ignored_pixels_and_junk_under_the_mask(split):
  out, labels, mask = split
  for spec in SPECS:
    got = losses.task_loss(spec, jnp.asarray(out[spec.name]), jnp.asarray(labels[spec.name]),
                           jnp.asarray(mask[spec.name]))
    want = ORACLES[spec.name](out[spec.name], labels[spec.name], mask[spec.name])["loss"]
    np.testing.assert_allclose(float(got), want, rtol=1e-5, err_msg=spec.name)
    # the denominator for gradient accumulation is the number of valid pixels
    count = spec.task_kind.loss_count(jnp.asarray(labels[spec.name]),
                                      jnp.asarray(mask[spec.name]))
    valid = spec.task_kind.numpy_valid(np.nan_to_num(labels[spec.name]), mask[spec.name])
    assert float(count) == valid.sum() > 0


def test_no_valid_pixel_gives_loss_0_and_zero_gradient(split):
  out, labels, mask = split
  blank = {"seg": np.full((N, H, W), -1), "depth": np.zeros((N, H, W), np.float32),
           "normal": np.zeros((N, H, W, 3), np.float32)}
  for spec in SPECS:
    for lab, msk in ((blank[spec.name], mask[spec.name]),  # every pixel ignored
                     (labels[spec.name], np.zeros(N, bool))):  # no example labelled
      f = lambda o: losses.task_loss(spec, o, jnp.asarray(lab), jnp.asarray(msk))  # noqa: E731
      o = jnp.asarray(out[spec.name])
      assert float(f(o)) == 0.0, spec.name
      assert np.all(np.asarray(jax.grad(f)(o)) == 0.0), spec.name


def test_normals_loss_gradient_is_finite_at_a_zero_prediction(split):
  _, labels, mask = split
  f = lambda o: losses.task_loss(NORMAL, o, jnp.asarray(labels["normal"]),  # noqa: E731
                                 jnp.asarray(mask["normal"]))
  assert np.all(np.isfinite(np.asarray(jax.grad(f)(jnp.zeros((N, H, W, 3))))))


def test_streamed_eval_in_padded_batches_equals_the_whole_split(split):
  """evaluate() sums per batch (batch 3: the last one padded); equal to the oracles over the
  whole split, and to ``kind.metrics`` on the whole arrays at once."""
  out, labels, mask = split
  groups = tasks.group_tasks(SPECS)
  data = ArrayDataset(np.arange(N), labels, mask)

  def eval_fn(params, idx):
    del params
    idx = jnp.clip(idx, 0, N - 1)
    return {g.key: jnp.stack([jnp.asarray(out[n])[idx] for n in g.names]) for g in groups}

  res, _ = evaluation.evaluate(eval_fn, None, data, SPECS, groups, 3, parallel.make_mesh(1))
  for spec in SPECS:
    name = spec.name
    want = ORACLES[name](out[name], labels[name], mask[name])
    assert res[name]["count"] == mask[name].sum()
    _check(res[name], want, name)
    _check(metrics.task_metrics(spec, out[name], labels[name], mask[name]), want, name)


def test_sums_in_chunks_of_examples_equal_the_whole_batch(split, monkeypatch):
  from mtl_jax.kinds import _dense
  out, labels, mask = split
  monkeypatch.setattr(_dense, "SUM_CHUNK", 2)  # 7 examples: chunks 2, 2, 2, 1
  for spec in SPECS:
    name = spec.name
    _check(metrics.task_metrics(spec, out[name], labels[name], mask[name]),
           ORACLES[name](out[name], labels[name], mask[name]), name)


def test_miou_leaves_out_classes_absent_from_labels_and_predictions():
  # class 2 appears nowhere; class 1 only in a prediction (IoU 0); label -1 pixels don't count
  y = np.array([[[0, 0, 1, -1]]])
  pred = np.array([[[0, 1, 1, 2]]])  # the prediction at the ignored pixel is not counted
  o = np.eye(3)[pred] * 4.0
  spec = TaskSpec("s", "segmentation", 3)
  got = metrics.task_metrics(spec, o, y, np.ones(1, bool))
  # class 0: I=1, U=2; class 1: I=1, U=2; class 2: absent -> mean of two
  assert got["miou"] == pytest.approx(0.5) and got["pixel_accuracy"] == pytest.approx(2 / 3)


def test_histogram_median_is_within_one_bin_for_odd_and_even_counts():
  rng = np.random.default_rng(1)
  for n in (1, 2, 1001, 1000):
    ang = rng.uniform(0, 90, n)
    counts = np.bincount((ang / normals_kind.MEDIAN_BIN).astype(int), minlength=180001)
    got = normals_kind.histogram_median(counts, normals_kind.MEDIAN_BIN)
    assert abs(got - np.median(ang)) <= normals_kind.MEDIAN_BIN, n
  assert np.isnan(normals_kind.histogram_median(np.zeros(5), 1.0))


def test_directions_for_delta_m():
  higher = {"segmentation": ["miou", "pixel_accuracy"],
            "normals": ["within_11_25", "within_22_5", "within_30"]}
  lower = {"segmentation": ["loss"], "depth": ["loss", "abs_err", "rel_err"],
           "normals": ["loss", "mean_angle", "median_angle"]}
  for kind, ms in higher.items():
    assert all(kinds.higher_is_better(m, kind) for m in ms)
  for kind, ms in lower.items():
    assert not any(kinds.higher_is_better(m, kind) for m in ms)
  assert kinds.higher_is_better("miou") and not kinds.higher_is_better("rel_err")


def test_bad_labels_and_specs_are_clear_errors(split):
  _, labels, mask = split
  tasks.validate_batch(SPECS, labels, mask, inputs=np.zeros((N, H, W, 3)))  # junk is masked
  seg = labels["seg"].copy()
  seg[4, 1, 3] = K
  with pytest.raises(LabelError, match=r"'seg'.*1 pixels.*classes 0..3.*example 4, pixel \(1, 3\)"):
    tasks.validate_labels(SEG, seg, mask["seg"])
  depth = labels["depth"].copy()
  depth[0, 0, 0] = -1.0
  with pytest.raises(LabelError, match=r"'depth'.*negative.*example 0, pixel \(0, 0\)"):
    tasks.validate_labels(DEPTH, depth, mask["depth"])
  n = labels["normal"].copy()
  n[6, 4, 5, 1] = np.inf
  with pytest.raises(LabelError, match=r"'normal'.*non-finite.*example 6, pixel \(4, 5\)"):
    tasks.validate_labels(NORMAL, n, mask["normal"])
  with pytest.raises(LabelError, match=r"'normal'.*shape \(7, 5, 6\)"):
    tasks.validate_labels(NORMAL, labels["depth"], mask["normal"])
  with pytest.raises(LabelError, match="mask must have shape"):
    tasks.validate_labels(SEG, labels["seg"], np.ones((N, H, W), bool))
  with pytest.raises(ValueError, match="num_outputs must be 3"):
    TaskSpec("n", "normals", 1)
  with pytest.raises(ValueError, match="num_outputs must be 1"):
    TaskSpec("d", "depth", 2)
  with pytest.raises(ValueError, match="num_outputs >= 2"):
    TaskSpec("s", "segmentation", 1)
  with pytest.raises(ValueError, match="do not fit labels"):
    losses.task_loss(SEG, jnp.zeros((N, H, W + 1, K)), jnp.asarray(labels["seg"]),
                     jnp.asarray(mask["seg"]))


def test_remap_ignore():
  got = remap_ignore(np.array([[0.0, 255.0], [6.0, 255.0]]), 255)
  assert got.dtype == np.int32 and got.tolist() == [[0, -1], [6, -1]]
  with pytest.raises(ValueError, match="whole numbers"):
    remap_ignore(np.array([0.5]), 255)


def test_stacked_heads_return_a_map_per_task():
  groups = tasks.group_tasks(SPECS)
  heads = TaskHeads(groups)
  feats = jnp.ones((2, H, W, 8))
  params = heads.init(jax.random.PRNGKey(0), feats)
  out = heads.apply(params, feats)
  assert {k: v.shape for k, v in out.items()} == {
      "segmentation_4": (1, 2, H, W, K), "depth_1": (1, 2, H, W, 1),
      "normals_3": (1, 2, H, W, 3)}


# NYUv2 rows (docs/references.md): single-task baseline as in CAGrad / Nash-MTL's
# ``delta_fn``, and two rows of Nash-MTL's Table 2, whose Δm% are -4.04 (Nash-MTL) and
# +5.59 (LS) with the opposite sign convention (lower is better there).
NYU_METRICS = {"seg": ["miou", "pixel_accuracy"], "depth": ["abs_err", "rel_err"],
               "normal": ["mean_angle", "median_angle", "within_11_25", "within_22_5",
                          "within_30"]}
NYU_KINDS = {"seg": "segmentation", "depth": "depth", "normal": "normals"}


def _nyu_row(values):
  it = iter(values)
  return {t: {m: next(it) for m in ms} for t, ms in NYU_METRICS.items()}


NYU_STL = _nyu_row([0.3830, 0.6376, 0.6754, 0.2780, 25.01, 19.21, 0.3014, 0.5720, 0.6915])
NYU_NASH = _nyu_row([0.4013, 0.6593, 0.5261, 0.2171, 25.26, 20.08, 0.2840, 0.5547, 0.6815])
NYU_LS = _nyu_row([0.3929, 0.6533, 0.5493, 0.2263, 28.15, 23.96, 0.2209, 0.4750, 0.6108])


def test_delta_m_reproduces_published_nyuv2_rows():
  for row, published in ((NYU_NASH, -4.04), (NYU_LS, 5.59)):
    got = metrics.delta_m(row, NYU_STL, NYU_METRICS, kind_of=NYU_KINDS)
    assert got == pytest.approx(-published, abs=0.01)  # the table rounds each entry
    # LibMTL's count_improvement: per-task means first, written out by hand
    s, d = row["seg"], row["depth"]
    seg = ((s["miou"] - .3830) / .3830 + (s["pixel_accuracy"] - .6376) / .6376) / 2
    dep = (-(d["abs_err"] - .6754) / .6754 - (d["rel_err"] - .2780) / .2780) / 2
    nor = np.mean([-(row["normal"]["mean_angle"] - 25.01) / 25.01,
                   -(row["normal"]["median_angle"] - 19.21) / 19.21,
                   (row["normal"]["within_11_25"] - .3014) / .3014,
                   (row["normal"]["within_22_5"] - .5720) / .5720,
                   (row["normal"]["within_30"] - .6915) / .6915])
    np.testing.assert_allclose(
        metrics.delta_m(row, NYU_STL, NYU_METRICS, NYU_KINDS, average="tasks"),
        100 * (seg + dep + nor) / 3, rtol=1e-12)
  # directions from the kinds alone (no kind_of) give the same number
  assert metrics.delta_m(NYU_NASH, NYU_STL, NYU_METRICS) == pytest.approx(
      metrics.delta_m(NYU_NASH, NYU_STL, NYU_METRICS, kind_of=NYU_KINDS))
  with pytest.raises(ValueError, match="2 metrics but one value"):
    metrics.delta_m({"seg": 0.4}, {"seg": 0.3}, {"seg": ["miou", "pixel_accuracy"]})
  with pytest.raises(KeyError, match="'seg' has no 'miou'"):
    metrics.delta_m({"seg": {"pixel_accuracy": 0.4}}, NYU_STL, {"seg": ["miou"]})
  with pytest.raises(ValueError, match="average must be"):
    metrics.delta_m(NYU_NASH, NYU_STL, NYU_METRICS, average="mean")
