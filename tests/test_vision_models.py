"""ResNet-18 and ViT-Ti trunks: published parameter counts, forward values
against an independent torch implementation, block naming and truncation."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import flat_params
from mtl_jax.models import TRUNKS
from mtl_jax.models.resnet import ResNet
from mtl_jax.models.sharing import count_params
from mtl_jax.models.vit import ViT


def _resnet_count(features=(64, 128, 256, 512), units=(2, 2, 2, 2), stem=64, c_in=3, k_stem=7):
  """Closed form: bias-free convs, two affine parameters per normalized channel."""
  n = k_stem * k_stem * c_in * stem + 2 * stem
  prev = stem
  for i, (f, u) in enumerate(zip(features, units)):
    for j in range(u):
      cin = prev if j == 0 else f
      n += 9 * cin * f + 2 * f + 9 * f * f + 2 * f
      if j == 0 and (i > 0 or cin != f):  # a stride-2 or width-changing unit projects (1x1)
        n += cin * f + 2 * f
    prev = f
  return n


def _vit_count(d=192, layers=12, mlp=768, patch=16, c_in=3, tokens=14 * 14 + 1):
  embed = patch * patch * c_in * d + d + d + tokens * d  # conv, its bias, [CLS], positions
  block = 2 * d + 4 * (d * d + d) + 2 * d + (d * mlp + mlp) + (mlp * d + d)
  return embed + layers * block + 2 * d


def test_registered():
  assert TRUNKS.get("resnet") is ResNet and TRUNKS.get("vit") is ViT


def test_resnet18_parameter_count_is_the_published_one():
  # torchvision resnet18: 11,689,512 parameters, of which the fc layer is 512*1000+1000.
  n = count_params(ResNet(), jnp.zeros((1, 224, 224, 3)))
  assert n == _resnet_count() == 11_689_512 - 513_000
  # torchvision resnet34 (21,797,672 with fc): the same units, (3, 4, 6, 3) per stage.
  n34 = count_params(ResNet(units_per_stage=(3, 4, 6, 3)), jnp.zeros((1, 224, 224, 3)))
  assert n34 == _resnet_count(units=(3, 4, 6, 3)) == 21_797_672 - 513_000


def test_vit_ti_parameter_count_is_the_published_one():
  # timm vit_tiny_patch16_224: 5,717,416 parameters, of which the head is 192*1000+1000.
  n = count_params(ViT(), jnp.zeros((1, 224, 224, 3)))
  assert n == _vit_count() == 5_717_416 - 193_000
  assert count_params(ViT(pooling="mean"), jnp.zeros((1, 224, 224, 3))) == n - 192 - 192


# ------------------------------------------------------------- torch oracles


def _t(a):
  import torch
  return torch.from_numpy(np.array(a, np.float32))  # a writable copy


def _conv_w(k):  # flax HWIO -> torch OIHW
  return _t(np.transpose(np.asarray(k), (3, 2, 0, 1)))


def _torch_resnet(p, x, features, units, groups):
  import torch.nn.functional as F
  def gn(y, q, c):
    return F.group_norm(y, min(groups, c), _t(q["scale"]), _t(q["bias"]), eps=1e-5)
  b0 = p["block_0"]
  y = F.conv2d(x, _conv_w(b0["stem_conv"]["kernel"]), stride=2, padding=3)
  y = F.relu(gn(y, b0["stem_norm"], y.shape[1]))
  y = F.max_pool2d(y, 3, stride=2, padding=1)
  for i, (f, u) in enumerate(zip(features, units)):
    for j in range(u):
      q = p[f"block_{i}"][f"unit_{j}"]
      s = 2 if (i > 0 and j == 0) else 1
      z = F.relu(gn(F.conv2d(y, _conv_w(q["conv1"]["kernel"]), stride=s, padding=1), q["norm1"], f))
      z = gn(F.conv2d(z, _conv_w(q["conv2"]["kernel"]), padding=1), q["norm2"], f)
      if "proj_conv" in q:
        y = gn(F.conv2d(y, _conv_w(q["proj_conv"]["kernel"]), stride=s), q["proj_norm"], f)
      y = F.relu(y + z)
  return y.mean(dim=(2, 3)).numpy()


def _torch_vit(p, x, heads, layers):
  import torch
  import torch.nn.functional as F
  d = p["embedding"]["bias"].shape[0]
  y = F.conv2d(x, _conv_w(p["embedding"]["kernel"]), _t(p["embedding"]["bias"]),
               stride=p["embedding"]["kernel"].shape[0])
  y = y.flatten(2).transpose(1, 2)
  y = torch.cat([_t(p["cls"]).expand(y.shape[0], 1, d), y], 1) + _t(p["pos_embedding"])
  lin = lambda z, q: z @ _t(q["kernel"]) + _t(q["bias"])  # noqa: E731
  ln = lambda z, q: F.layer_norm(z, (d,), _t(q["scale"]), _t(q["bias"]), eps=1e-6)  # noqa: E731
  for i in range(layers):
    q = p[f"block_{i}"]
    h = ln(y, q["norm1"])
    b, l, _ = h.shape
    split = lambda z: z.reshape(b, l, heads, d // heads).transpose(1, 2)  # noqa: E731
    a = F.scaled_dot_product_attention(*(split(lin(h, q["attention"][n]))
                                         for n in ("query", "key", "value")))
    y = y + lin(a.transpose(1, 2).reshape(b, l, d), q["attention"]["out"])
    h = F.gelu(lin(ln(y, q["norm2"]), q["mlp_in"]), approximate="tanh")
    y = y + lin(h, q["mlp_out"])
  return ln(y, p["norm"])[:, 0].numpy()


def _randomize(params, seed):
  """Non-trivial norms and biases (init has scale 1, bias 0, cls 0)."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  return jax.tree.unflatten(tree, [l + 0.1 * jax.random.normal(k, l.shape)
                                   for l, k in zip(leaves, keys)])


def test_resnet_forward_matches_torch():
  features, units = (8, 16, 16), (2, 1, 1)
  m = ResNet(features=features, units_per_stage=units, stem_features=8, norm_groups=4)
  x = np.random.default_rng(0).random((2, 32, 32, 3), np.float32)
  p = _randomize(m.init(jax.random.PRNGKey(0), x)["params"], 1)
  out = np.asarray(m.apply({"params": p}, x))
  assert out.shape == (2, 16)
  ref = _torch_resnet(p, _t(x).permute(0, 3, 1, 2), features, units, 4)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_vit_forward_matches_torch():
  m = ViT(patch_size=4, hidden_size=24, num_layers=2, num_heads=3, mlp_dim=48)
  x = np.random.default_rng(0).random((2, 12, 8, 3), np.float32)
  p = _randomize(m.init(jax.random.PRNGKey(0), x)["params"], 1)
  assert p["pos_embedding"].shape == (1, 3 * 2 + 1, 24)
  out = np.asarray(m.apply({"params": p}, x))
  ref = _torch_vit(p, _t(x).permute(0, 3, 1, 2), 3, 2)
  np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------- truncation


def test_resnet_truncation_is_the_pooled_stage_output():
  full = ResNet(features=(8, 16, 16), units_per_stage=(1, 1, 1), stem_features=8)
  x = np.random.default_rng(1).random((2, 32, 32), np.float32)  # [B, H, W]: one channel
  p = full.init(jax.random.PRNGKey(0), x)["params"]
  assert sorted(p) == ["block_0", "block_1", "block_2"]
  _, inter = full.apply({"params": p}, x, capture_intermediates=True)
  stage1 = inter["intermediates"]["block_1"]["__call__"][0]
  cut = ResNet(features=(8, 16, 16), units_per_stage=(1, 1, 1), stem_features=8, num_blocks=2)
  sub = {k: p[k] for k in ("block_0", "block_1")}
  assert jax.tree.structure(cut.init(jax.random.PRNGKey(0), x)["params"]) == jax.tree.structure(sub)
  np.testing.assert_allclose(cut.apply({"params": sub}, x), stage1.mean(axis=(1, 2)), rtol=1e-6)


def test_vit_truncation_is_the_first_layers():
  kw = dict(patch_size=4, hidden_size=12, num_heads=2, mlp_dim=24)
  x = np.random.default_rng(2).random((2, 8, 8, 3), np.float32)
  p = ViT(num_layers=4, **kw).init(jax.random.PRNGKey(0), x)["params"]
  sub = {k: v for k, v in p.items() if k not in ("block_2", "block_3")}
  cut = ViT(num_layers=4, num_blocks=2, **kw)
  two = ViT(num_layers=2, **kw)
  np.testing.assert_allclose(cut.apply({"params": sub}, x), two.apply({"params": sub}, x), rtol=1e-6)
  assert set(flat_params(cut.init(jax.random.PRNGKey(0), x)["params"])) == set(flat_params(sub))


def test_bad_inputs_name_the_problem():
  with pytest.raises(TypeError, match="floating"):
    ResNet(features=(8,), units_per_stage=(1,)).init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="norm='batch'.*batch_stats"):
    ResNet(norm="batch").init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="10 channels"):
    ResNet(features=(10,), units_per_stage=(1,), stem_features=8, norm_groups=4).init(
        jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3)))
  with pytest.raises(ValueError, match="not a multiple of patch_size 16"):
    ViT().init(jax.random.PRNGKey(0), np.zeros((1, 20, 16, 3)))
  with pytest.raises(ValueError, match="num_blocks=5"):
    ResNet(num_blocks=5).init(jax.random.PRNGKey(0), np.zeros((1, 32, 32, 3)))


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_bfloat16_compute_stays_close_to_float32(name):
  # The precision policy (mtl_jax/precision.py) casts parameters and floating
  # inputs to the compute dtype; the trunks must then compute in it.
  m = (ResNet(features=(8, 16), units_per_stage=(1, 1), stem_features=8, norm_groups=4)
       if name == "resnet" else ViT(patch_size=4, hidden_size=16, num_layers=2, num_heads=2,
                                    mlp_dim=32))
  x = np.random.default_rng(3).random((4, 16, 16, 3), np.float32)
  p = m.init(jax.random.PRNGKey(0), x)["params"]
  ref = np.asarray(m.apply({"params": p}, x))
  bf = jax.tree.map(lambda a: a.astype(jnp.bfloat16), p)
  out = m.apply({"params": bf}, x.astype(jnp.bfloat16))
  assert out.dtype == jnp.bfloat16
  err = np.abs(np.asarray(out, np.float32) - ref).max() / np.abs(ref).max()
  assert err < 0.05, err


def test_transfer_plans_count_the_blocks():
  from conftest import tiny_config
  from mtl_jax import transfer
  # transfer counts blocks from the config (features / num_layers), not the class defaults.
  for trunk, n in ((dict(name="resnet", features=(64, 128, 256, 512)), 4),
                   (dict(name="vit", num_layers=12), 12)):
    c = tiny_config()
    c.model.trunk = trunk
    c.transfer = dict(strategy=f"truncate:{n}", upstream="/up")
    assert transfer.plan(c).config.model.trunk.num_blocks == n
    c.transfer = dict(strategy=f"truncate:{n + 1}", upstream="/up")
    with pytest.raises(ValueError, match=f"1 <= K <= {n}"):
      transfer.plan(c)
    c.transfer = dict(strategy="freeze_bottom:2", upstream="/up", trunk_lr_mult=0.5)
    groups = [tuple(g) for g in transfer.plan(c).config.param_groups]
    assert groups[:2] == [("trunk/block_0/.*", None), ("trunk/block_1/.*", None)]
    assert len(groups) == n + 2  # n block rules, the rest of the trunk, the heads
