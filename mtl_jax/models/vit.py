"""A Vision Transformer trunk (Dosovitskiy et al. 2021), ViT-Ti/16 by default.

Patch embedding (a ``patch_size`` stride conv), a learned [CLS] token and
learned position embeddings, ``num_layers`` pre-LN blocks (x += Attn(LN(x));
x += MLP(LN(x))) and a final LayerNorm, pooled by the [CLS] token
(``pooling="cls"``) or the mean over patches (``"mean"``, no [CLS] token).
ViT-Ti: 12 layers x 192 wide x 3 heads, MLP 768 (Touvron et al. 2021, DeiT).

Layers are ``block_0 .. block_{N-1}`` and ``num_layers`` counts them, so
freeze_bottom:N, layer decay and truncate:K (``num_blocks``) address them;
the embedding (``embedding``, ``cls``, ``pos_embedding``) and the final
``norm`` sit outside the blocks, like BERT's embeddings. Paths inside a
block: ``norm1``, ``attention/{query,key,value,out}``, ``norm2``,
``mlp_in``, ``mlp_out``. Position embeddings are sized by the image seen at
init ((H / patch) * (W / patch) patches).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mtl_jax.models.resnet import _image
from mtl_jax.models.trunks import TRUNKS

POOLINGS = ("cls", "mean")


class Attention(nn.Module):
  num_heads: int
  dropout: float

  @nn.compact
  def __call__(self, x, train: bool):
    b, l, d = x.shape
    h = self.num_heads
    dense = lambda name: nn.Dense(d, kernel_init=nn.initializers.xavier_uniform(), name=name)  # noqa: E731
    split = lambda t: t.reshape(b, l, h, d // h)  # noqa: E731
    q, k, v = (split(dense(n)(x)) for n in ("query", "key", "value"))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // h).astype(q.dtype)
    # Softmax in float32 (the weights of a bf16 softmax lose their small entries).
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    probs = nn.Dropout(self.dropout, deterministic=not train)(probs)
    return dense("out")(jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, d))


class EncoderBlock(nn.Module):
  num_heads: int
  mlp_dim: int
  dropout: float

  @nn.compact
  def __call__(self, x, train: bool):
    drop = nn.Dropout(self.dropout, deterministic=not train)
    x = x + drop(Attention(self.num_heads, self.dropout, name="attention")(
        nn.LayerNorm(epsilon=1e-6, name="norm1")(x), train))
    y = nn.LayerNorm(epsilon=1e-6, name="norm2")(x)
    y = nn.gelu(nn.Dense(self.mlp_dim, kernel_init=nn.initializers.xavier_uniform(),
                         bias_init=nn.initializers.normal(1e-6), name="mlp_in")(y))
    y = nn.Dense(x.shape[-1], kernel_init=nn.initializers.xavier_uniform(),
                 bias_init=nn.initializers.normal(1e-6), name="mlp_out")(drop(y))
    return x + drop(y)


@TRUNKS.register("vit")
class ViT(nn.Module):
  """[B, H, W(, C)] float images -> [B, hidden_size]; H and W multiples of ``patch_size``."""
  patch_size: int = 16
  hidden_size: int = 192
  num_layers: int = 12
  num_heads: int = 3
  mlp_dim: int = 768
  dropout: float = 0.0
  pooling: str = "cls"
  num_blocks: int = -1  # keep the first K blocks; -1 keeps all

  @nn.compact
  def __call__(self, x, train: bool = False):
    if self.pooling not in POOLINGS:
      raise ValueError(f"vit: pooling={self.pooling!r}; valid: {list(POOLINGS)}")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"vit: hidden_size {self.hidden_size} is not divisible by num_heads "
                       f"{self.num_heads}")
    n = self.num_layers if self.num_blocks < 0 else self.num_blocks
    if not 0 <= n <= self.num_layers:
      raise ValueError(f"vit: num_blocks={self.num_blocks}; valid: -1 or 0..{self.num_layers}")
    x = _image(x, "vit")
    p = self.patch_size
    if x.shape[1] % p or x.shape[2] % p:
      raise ValueError(f"vit: image {x.shape[1]}x{x.shape[2]} is not a multiple of "
                       f"patch_size {p}")
    x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID", name="embedding")(x)
    b, gh, gw, d = x.shape
    x = x.reshape(b, gh * gw, d)
    if self.pooling == "cls":
      cls = self.param("cls", nn.initializers.zeros, (1, 1, d))
      x = jnp.concatenate([jnp.broadcast_to(cls.astype(x.dtype), (b, 1, d)), x], axis=1)
    pos = self.param("pos_embedding", nn.initializers.normal(0.02), (1, x.shape[1], d))
    x = nn.Dropout(self.dropout, deterministic=not train)(x + pos.astype(x.dtype))
    for i in range(n):
      x = EncoderBlock(self.num_heads, self.mlp_dim, self.dropout, name=f"block_{i}")(x, train)
    x = nn.LayerNorm(epsilon=1e-6, name="norm")(x)
    return x[:, 0] if self.pooling == "cls" else jnp.mean(x, axis=1)
