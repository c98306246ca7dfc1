"""Dense-prediction models against PyTorch: the pooling/unpooling and align-corners resize
ops, SegNet and MTAN (every task's attention path against a per-task reference written from
MTAN's model_segnet_mtan.py forward), the dilated ResNet (CSAIL's no-stride-dilate rule) and
the ASPP head, all on copied weights; plus the layouts' gradient claims and the errors."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params
from mtl_jax.models import build_model
from mtl_jax.models.dense import max_pool_with_indices, max_unpool, resize_bilinear
from mtl_jax.models.dilated_resnet import DilatedResNet
from mtl_jax.models.resnet import ResNet
from mtl_jax.models.segnet import SegNet
from mtl_jax.models.columns import task_order
from mtl_jax.models.sharing import layout, variables
from mtl_jax.tasks import TaskSpec, group_tasks

torch = pytest.importorskip("torch")

# Every value is checked against torch: cheap XLA:CPU codegen is enough.
FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(fn):
  return jax.jit(fn, compiler_options=FAST)

F = torch.nn.functional

G = 2  # norm groups
SEG = dict(name="segnet", features=(4, 6, 6), convs_per_level=(1, 1, 2), norm_groups=G)
SPECS = (TaskSpec("seg", "segmentation", 5), TaskSpec("depth", "depth"),
         TaskSpec("normal", "normals", 3))
GROUPS = group_tasks(SPECS)
KEY = {s.name: g.key for g in GROUPS for s in SPECS if s.name in g.names}
RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 16, 16, 3)).astype(np.float32)


def _params(model, x=X, scale=0.5, seed=1):
  """Every leaf from NumPy (norm scales near 1), so the oracle sees plain numbers."""
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  rng = np.random.default_rng(seed)

  def draw(path, s):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    v = scale * rng.normal(size=s.shape)
    return (v + 1.0 if name.endswith("scale") else v).astype(np.float32)
  return jax.tree_util.tree_map_with_path(draw, shapes)


def T(a):
  return torch.tensor(np.asarray(a, np.float32))


def nchw(x):
  return T(x).permute(0, 3, 1, 2)


def nhwc(t):
  return t.permute(0, 2, 3, 1).detach().numpy()


# ------------------------------------------------------------------- torch reference layers

def t_conv(p, x, dilation=1, stride=1):
  k = T(p["kernel"]).permute(3, 2, 0, 1)
  pad = dilation * (k.shape[-1] // 2)
  return F.conv2d(x, k, T(p["bias"]) if "bias" in p else None, stride=stride, padding=pad,
                  dilation=dilation)


def t_gn(p, x, groups=G):
  return F.group_norm(x, min(groups, x.shape[1]), T(p["scale"]), T(p["bias"]), eps=1e-5)


def t_cnr(p, x, dilation=1, groups=G):  # MTAN's conv_layer: 3x3 conv, BN (here GN), ReLU
  return F.relu(t_gn(p["norm"], t_conv(p["conv"], x, dilation), groups))


def t_segnet(p, x, levels, extra):
  """MTAN's shared SegNet forward: (output, g_encoder [(a, b)], g_upsampl, g_decoder)."""
  enc, ind, ups, dec = [], [], [], []
  for i in range(levels):
    a = t_cnr(p[f"block_{i}"]["conv_0"], x)
    b = a
    for c in range(extra[i]):
      b = t_cnr(p[f"block_{i}"][f"conv_{c + 1}"], b)
    x, idx = F.max_pool2d(b, 2, 2, return_indices=True)
    enc.append((a, b))
    ind.append(idx)
  for j in range(levels):
    k = levels - 1 - j
    u = F.max_unpool2d(x, ind[k], 2, 2)
    x = t_cnr(p[f"block_{levels + j}"]["conv_0"], u)
    for c in range(extra[k]):
      x = t_cnr(p[f"block_{levels + j}"][f"conv_{c + 1}"], x)
    ups.append(u)
    dec.append(x)
  return x, enc, ups, dec


def t_att(p, x, t):
  """MTAN's att_layer for task row t: 1x1 conv, norm, ReLU, 1x1 conv, norm, sigmoid."""
  def dense(q, v):
    return F.conv2d(v, T(q["kernel"][t]).T[:, :, None, None], T(q["bias"][t]))

  def gn(q, v):
    return F.group_norm(v, min(G, v.shape[1]), T(q["scale"][t]), T(q["bias"][t]), eps=1e-5)
  x = F.relu(gn(p["norm_0"], dense(p["dense_0"], x)))
  return torch.sigmoid(gn(p["norm_1"], dense(p["dense_1"], x)))


def t_mtan_task(p, x, t, levels, extra):
  """Task t's features in MTAN's forward (the atten_encoder / atten_decoder loops)."""
  _, enc, ups, dec = t_segnet(p["trunk"], x, levels, extra)
  a = p["attention"]
  s = None
  for j in range(levels):
    inp = enc[j][0] if j == 0 else torch.cat((enc[j][0], s), dim=1)
    m = t_att(a[f"encoder_att_{j}"], inp, t) * enc[j][1]
    s = F.max_pool2d(t_cnr(a[f"encoder_conv_{j}"], m), kernel_size=2, stride=2)
  for j in range(levels):
    d = F.interpolate(s, scale_factor=2, mode="bilinear", align_corners=True)
    d = t_cnr(a[f"decoder_conv_{j}"], d)
    s = t_att(a[f"decoder_att_{j}"], torch.cat((ups[j], d), dim=1), t) * dec[j]
  return s


def t_pred(p, x, row):
  """MTAN's conv_layer(pred=True): 3x3 conv then 1x1 conv (row: the task's head slice)."""
  q = {k: {n: v[row] for n, v in p[k].items()} for k in ("conv_0", "out")}
  return t_conv(q["out"], t_conv(q["conv_0"], x))


# ----------------------------------------------------------------------------- ops

def test_pool_unpool_and_resize_equal_torch():
  x = RNG.normal(size=(2, 6, 8, 3)).astype(np.float32)
  x[0, :2, :2, 0] = 0.0  # a tied window: both pick the first position
  pooled, idx = max_pool_with_indices(jnp.asarray(x))
  t_pooled, t_idx = F.max_pool2d(nchw(x), 2, 2, return_indices=True)
  np.testing.assert_array_equal(np.asarray(pooled), nhwc(t_pooled))
  np.testing.assert_array_equal(np.asarray(max_unpool(pooled, idx)),
                                nhwc(F.max_unpool2d(t_pooled, t_idx, 2, 2)))
  for size in ((12, 16), (7, 5), (6, 8)):
    np.testing.assert_allclose(
        np.asarray(resize_bilinear(jnp.asarray(x), size)),
        nhwc(F.interpolate(nchw(x), size=size, mode="bilinear", align_corners=True)),
        rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r"even height and width .* \(5, 8\)"):
    max_pool_with_indices(jnp.zeros((1, 5, 8, 1)))


# ------------------------------------------------------------------ SegNet and MTAN

@pytest.fixture(scope="module")
def mtan():
  model = build_model(dict(sharing="mtan", trunk=SEG, decoder=dict(name="conv")), GROUPS)
  params = _params(model)
  out = _jit(lambda p: model.apply({"params": p}, X))(params)
  return model, jax.tree.map(np.asarray, params), jax.device_get(out)


def test_segnet_trunk_equals_mtans_shared_network():
  model = build_model(dict(sharing="hard", trunk=SEG, decoder=dict(name="conv")), GROUPS)
  p = _params(model)
  trunk = SegNet(features=SEG["features"], convs_per_level=SEG["convs_per_level"], norm_groups=G)
  out, taps = _jit(lambda q: trunk.apply({"params": q}, X, False, True))(p["trunk"])
  t_out, t_enc, t_ups, t_dec = t_segnet(jax.tree.map(np.asarray, p["trunk"]), nchw(X), 3,
                                        SEG["convs_per_level"])
  np.testing.assert_allclose(np.asarray(out), nhwc(t_out), rtol=1e-4, atol=1e-5)
  for (a, b), (ta, tb) in zip(taps["encoder"], t_enc):
    np.testing.assert_allclose(np.asarray(b), nhwc(tb), rtol=1e-4, atol=1e-5)
  for u, tu in zip(taps["upsampled"], t_ups):
    np.testing.assert_allclose(np.asarray(u), nhwc(tu), rtol=1e-4, atol=1e-5)
  # hard sharing + conv decoder: MTAN's "split" model, each task's prediction layer on it
  y = _jit(lambda q: model.apply({"params": q}, X))(p)
  pn = jax.tree.map(np.asarray, p)
  for s in SPECS:
    want = t_pred(pn["heads"][KEY[s.name]], t_out, 0)
    np.testing.assert_allclose(np.asarray(y[KEY[s.name]][0]), nhwc(want), rtol=1e-4, atol=1e-5)


def test_mtan_equals_a_per_task_reference(mtan):
  """The golden test: each task's output is MTAN's forward for that task alone."""
  model, p, out = mtan
  order = task_order(GROUPS)
  for s in SPECS:
    t = order.index(s.name)
    feats = t_mtan_task(p, nchw(X), t, 3, SEG["convs_per_level"])
    want = nhwc(t_pred(p["heads"][KEY[s.name]], feats, 0))
    got = out[KEY[s.name]][0]
    assert got.shape == (2, 16, 16, s.num_outputs)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=s.name)


def _grads_per_task(model, params, specs=SPECS, groups=GROUPS):
  rng = np.random.default_rng(3)
  labels = {"seg": rng.normal(size=(2, 16, 16, 5)).astype(np.float32),
            "depth": rng.normal(size=(2, 16, 16, 1)).astype(np.float32),
            "normal": rng.normal(size=(2, 16, 16, 3)).astype(np.float32)}

  def per_task(p):
    out = model.apply({"params": p}, X)
    return jnp.stack([jnp.mean((out[KEY[s.name]][0] - labels[s.name]) ** 2) for s in specs])
  jac = _jit(jax.jacrev(per_task))(params)
  return [flat_params(jax.tree.map(lambda v, t=t: v[t], jac)) for t in range(len(specs))]


def test_mtan_layout_shared_parts_reach_every_task_attention_only_its_own(mtan):
  model, p, _ = mtan
  grads = _grads_per_task(model, p)
  order = task_order(GROUPS)
  shared = re.compile(layout("mtan").shared)
  keys = list(grads[0])
  assert any(k.startswith("attention/encoder_conv_") for k in keys if shared.fullmatch(k))
  for k in keys:
    reached = [t for t, g in enumerate(grads) if np.any(g[k] != 0)]
    if shared.fullmatch(k):
      assert len(reached) == len(SPECS), (k, reached)
    elif k.startswith("attention/"):  # per task: [T, ...], row order.index(task) only
      for t in reached:
        row = order.index(SPECS[t].name)
        assert np.any(grads[t][k][row] != 0) and np.all(np.delete(grads[t][k], row, 0) == 0), k
  assert {k.split("/")[0] for k in keys} == {"trunk", "attention", "heads"}


# ------------------------------------------------------------- dilated ResNet, ASPP

RES = dict(features=(4, 4, 8, 8), units_per_stage=(2, 1, 1, 1), stem_features=4, norm_groups=G)


def t_resnet(p, x, dilate):
  """A ResNet forward with CSAIL's _nostride_dilate applied to stage i by dilate[i]: its
  stride-2 convs get stride 1 and (3x3) dilation d/2, every other 3x3 conv dilation d."""
  b0 = p["block_0"]
  x = F.relu(t_gn(b0["stem_norm"], t_conv(b0["stem_conv"], x, stride=2)))
  x = F.max_pool2d(x, 3, 2, padding=1)
  for i in range(4):
    d = dilate[i]
    for j in range(RES["units_per_stage"][i]):
      u = p[f"block_{i}"][f"unit_{j}"]
      stride = 2 if (i > 0 and j == 0) else 1
      d1 = d if stride == 1 else max(d // 2, 1)
      s = 1 if d > 1 else stride
      y = F.relu(t_gn(u["norm1"], t_conv(u["conv1"], x, dilation=d1 if d > 1 else 1, stride=s)))
      y = t_gn(u["norm2"], t_conv(u["conv2"], y, dilation=d))
      if "proj_conv" in u:
        x = t_gn(u["proj_norm"], t_conv(u["proj_conv"], x, stride=s))
      x = F.relu(x + y)
  return x


@pytest.mark.parametrize("output_stride,dilate", [(8, (1, 1, 2, 4)), (16, (1, 1, 1, 2)),
                                                  (32, (1, 1, 1, 1))])
def test_dilated_resnet_equals_torch_no_stride_dilate(output_stride, dilate):
  x = RNG.normal(size=(1, 32, 32, 3)).astype(np.float32)
  m = DilatedResNet(**RES, output_stride=output_stride)
  p = _params(m, x)
  got = np.asarray(_jit(m.apply)({"params": p}, x))
  assert got.shape == (1, 32 // output_stride, 32 // output_stride, 8)
  want = nhwc(t_resnet(jax.tree.map(np.asarray, p), nchw(x), dilate))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  # same parameter tree as the classification trunk, which pools the undilated map
  r = ResNet(**RES)
  assert jax.tree.structure(r.init(jax.random.PRNGKey(0), x)["params"]) == jax.tree.structure(p)
  if output_stride == 32:
    np.testing.assert_allclose(np.asarray(r.apply({"params": p}, x)), got.mean(axis=(1, 2)),
                               rtol=1e-5, atol=1e-6)


def test_aspp_head_equals_torch_deeplab_head_and_upsamples_to_the_input():
  trunk = dict(name="dilated_resnet", **RES)
  # One norm group: the pooled branch's GroupNorm normalises 4 values per image, not 2 (whose
  # variance can be tiny, amplifying float32 rounding past any fixed tolerance).
  dec = dict(name="aspp", features=4, rates=(1, 2), norm_groups=1, dropout=0.5)
  model = build_model(dict(sharing="hard", trunk=trunk, decoder=dec), GROUPS)
  x = np.random.default_rng(5).normal(size=(2, 32, 32, 3)).astype(np.float32)
  p = _params(model, x)
  out = _jit(lambda q: model.apply({"params": q}, x))(p)  # train=False: no dropout
  pn = jax.tree.map(np.asarray, p)
  feats = t_resnet(pn["trunk"], nchw(x), (1, 1, 2, 4))  # [B, 8, 4, 4]
  for s in SPECS:
    h = {k: (jax.tree.map(lambda v: v[0], v)) for k, v in pn["heads"][KEY[s.name]].items()}
    branches = [t_cnr(h["aspp_1x1"], feats, groups=1)] + [
        t_cnr(h[f"aspp_rate{r}"], feats, dilation=r, groups=1) for r in (1, 2)]
    pooled = t_cnr(h["aspp_pool"], F.adaptive_avg_pool2d(feats, 1), groups=1)
    branches.append(F.interpolate(pooled, size=feats.shape[-2:], mode="bilinear",
                                  align_corners=False))
    y = t_cnr(h["conv"], t_cnr(h["project"], torch.cat(branches, dim=1), groups=1), groups=1)
    y = F.interpolate(t_conv(h["out"], y), size=(32, 32), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(np.asarray(out[KEY[s.name]][0]), nhwc(y), rtol=1e-4, atol=1e-5,
                               err_msg=s.name)
  # dropout is on in training and differs per task (split rngs)
  tr = _jit(lambda q: model.apply({"params": q}, x, train=True,
                                     rngs={"dropout": jax.random.PRNGKey(0)}))(p)
  assert not np.allclose(np.asarray(tr[KEY["seg"]]), np.asarray(out[KEY["seg"]]))


# ------------------------------------------------------------------ single task, errors

def test_single_task_segnet_columns_are_independent():
  model = build_model(dict(sharing="single_task", trunk=SEG, decoder=dict(name="conv")), GROUPS)
  p = jax.tree.map(np.asarray, _params(model))
  grads = _grads_per_task(model, p)
  order = task_order(GROUPS)
  for t, g in enumerate(grads):
    row = order.index(SPECS[t].name)
    for k, v in g.items():
      if k.startswith("columns/"):
        assert np.all(np.delete(v, row, 0) == 0) and np.any(v[row] != 0), k


@pytest.mark.parametrize("cfg,match", [
    (dict(sharing="mtan", trunk=dict(name="mlp")), r"'mtan' attends over a SegNet.*'mlp'"),
    (dict(sharing="hard", trunk=dict(name="mlp", features=(4,)), decoder=dict(name="conv")),
     r"model.decoder: the trunk must output a feature map"),
    (dict(sharing="hard", trunk=SEG, decoder=dict(name="fpn")), r"unknown dense decoder 'fpn'"),
    (dict(sharing="hard", trunk=SEG, decoder=dict(name="conv", width=3)),
     r"model.decoder 'conv': unknown options \['width'\]"),
    (dict(sharing="hard", trunk=SEG, decoder=dict(name="conv"), head_hidden=(4,)),
     r"model.decoder replaces the linear heads"),
    (dict(sharing="pooled", trunk=SEG, decoder=dict(name="conv")), r"not 'pooled'"),
    (dict(sharing="mtan", trunk=SEG),
     r"'mtan' predicts per pixel; task group 'binary_1' \(\('x',\)\) is of kind 'binary'"),
    (dict(sharing="hard", trunk=SEG, decoder=dict(name="conv")),
     r"task group 'binary_1' \(\('x',\)\) is of kind 'binary', which is not pixel-wise"),
    (dict(sharing="hard", trunk=dict(SEG, features=(4, 4, 4, 4, 4, 4), convs_per_level=(1,) * 6)),
     r"segnet: 6 pooling levels need height and width divisible by 64, got \(16, 16\)"),
    (dict(sharing="hard", trunk=dict(name="dilated_resnet", output_stride=4)),
     r"dilated_resnet: output_stride=4; valid: \[8, 16, 32\]"),
])
def test_bad_options_name_themselves(cfg, match):
  groups = GROUPS if "binary" not in match else group_tasks(SPECS + (TaskSpec("x", "binary"),))
  with pytest.raises((ValueError, KeyError), match=match):
    model = build_model(cfg, groups)
    jax.eval_shape(model.init, jax.random.PRNGKey(0), X)


def test_mtan_has_no_representation_path(mtan):
  model, p, _ = mtan
  with pytest.raises(ValueError, match=r"sharing 'mtan' has no shared representation .* "
                                       r"mode='representation'"):
    jax.eval_shape(lambda p: model.apply(variables(p), X, mutable=["perturbations"]), p)


def test_decoder_config_is_validated_and_overridable():
  from conftest import tiny_config
  from mtl_jax import config_cli
  from mtl_jax.config_validation import ConfigError, validate_config
  c = tiny_config()
  c.model = dict(sharing="hard", trunk=dict(SEG), decoder=dict(name="aspp", features=16,
                                                               rates=(1, 2)))
  validate_config(c)  # an int decoder.features beside the trunk's sequence is fine
  r = config_cli.resolve(c, [config_cli.Override("model.decoder.features", "8")])
  assert r.model.decoder.features == 8 and r.model.trunk.features == SEG["features"]
  with pytest.raises(ConfigError, match=r"model.decoder has no option 'width'|unknown.*width"):
    config_cli.resolve(c, [config_cli.Override("model.decoder.width", "8")])
  for bad, match in [(dict(name="aspp", features=(16,)), r"decoder.features = \(16,\)"),
                     (dict(name="aspp", features=-1), r"decoder.features = -1"),
                     (dict(name="aspp", rates=(0,)), r"decoder.rates = \(0,\)"),
                     (dict(features=3), r"config.model.decoder = \{'features': 3\}")]:
    c.model.decoder = bad
    with pytest.raises(ConfigError, match=match):
      validate_config(c)
