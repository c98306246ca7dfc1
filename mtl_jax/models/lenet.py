"""The MultiMNIST LeNet trunk of Sener & Koltun (NeurIPS 2018).

conv 1->10 5x5, pool 2, ReLU | conv 10->20 5x5, channel dropout, pool 2, ReLU |
FC 320->50, ReLU. Blocks are ``block_0..block_2`` like the other trunks, so
``trunk/block_2/.*kernel`` (GradNorm's default layer) is the FC layer.
"""

import flax.linen as nn

from mtl_jax.models.trunks import TRUNKS, DenseBlock


class ConvPoolBlock(nn.Module):
  """VALID conv, optional channel dropout (whole maps, as torch's Dropout2d), 2x2 max pool, ReLU."""
  features: int
  kernel_size: int = 5
  dropout: float = 0.0

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(self.features, (self.kernel_size, self.kernel_size), padding="VALID")(x)
    if self.dropout:
      x = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
    x = nn.max_pool(x, (2, 2), strides=(2, 2))
    return nn.relu(x)


@TRUNKS.register("lenet")
class LeNet(nn.Module):
  """[B, 28, 28] or [B, 28, 28, 1] -> [B, 50]; ``dropout`` is the channel dropout of conv 2."""
  features: tuple = (10, 20)
  kernel_size: int = 5
  hidden: int = 50
  dropout: float = 0.5
  num_blocks: int = -1  # keep only the first K blocks (truncation); -1 keeps all

  @nn.compact
  def __call__(self, x, train: bool = False):
    if x.ndim == 3:
      x = x[..., None]
    blocks = [ConvPoolBlock(self.features[0], self.kernel_size, name="block_0"),
              ConvPoolBlock(self.features[1], self.kernel_size, self.dropout, name="block_1"),
              DenseBlock(self.hidden, "relu", name="block_2")]
    n = len(blocks) if self.num_blocks < 0 else self.num_blocks
    for i, block in enumerate(blocks[:n]):
      if i == 2:
        x = x.reshape(x.shape[0], -1)
      x = block(x, train)
    return x.reshape(x.shape[0], -1)
