"""NewGAN as published (OpenGAN, Ditria, Meyer & Drummond, ACCV 2020), written from its description:

- generator: a linear map of z to a 4x4 map, then one residual up-block per doubling of the side
  (conditional BN, ReLU, nearest-neighbour x2, 3x3 conv, conditional BN, ReLU, 3x3 conv; skip: 1x1 conv
  and the same upsampling), a SAGAN self-attention block at mid resolution, a last conditional BN, ReLU,
  3x3 conv to one channel and tanh. e enters through every conditional BN (gamma = 1 + W_g e,
  beta = W_b e, W zero at init: plain BN until training makes the norm depend on e), so a new class's
  embedding needs no new parameters. Spectral norm on every conv and linear layer.
- discriminator: stride-2 4x4 convs with spectral norm and LeakyReLU down to 4x4, a linear realness
  head, and optionally the projection term <V e, phi(x)> that judges image-embedding agreement.

Same signatures as nets.py: `generator(z, e)` -> images in [-1, 1], `discriminator(x, e)` -> logits [B].
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from cxraug.gans.opengan.nets import ProjectionDiscriminator
from cxraug.nets.blocks import ConditionalBatchNorm2d, generator_widths, n_doublings

spectral_norm = nn.utils.parametrizations.spectral_norm


def sn_conv(cin: int, cout: int, kernel: int, bias: bool = True) -> nn.Module:
    """A spectrally normalised stride-1 conv that keeps the side (3x3: padding 1; 1x1: none)."""
    return spectral_norm(nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=bias))


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ResidualUpBlock(nn.Module):
    """Doubles the side: main path CBN-ReLU-up-conv3-CBN-ReLU-conv3, skip path conv1-up.

    The skip's 1x1 conv runs before the nearest upsampling: the two commute, and at the lower side
    it costs a quarter of the multiply-adds."""

    def __init__(self, cin: int, cout: int, embed_dim: int) -> None:
        super().__init__()
        self.norm1 = ConditionalBatchNorm2d(cin, embed_dim)
        self.conv1 = sn_conv(cin, cout, 3)
        self.norm2 = ConditionalBatchNorm2d(cout, embed_dim)
        self.conv2 = sn_conv(cout, cout, 3)
        self.skip = sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(up2(F.relu(self.norm1(x, e))))
        h = self.conv2(F.relu(self.norm2(h, e)))
        return h + up2(self.skip(x))


class SelfAttention(nn.Module):
    """SAGAN self-attention: x + gain * out(softmax(q(x)^T k(x)) v(x)), 1x1 spectral-normed projections
    (queries and keys C/8 channels, values C/2). `gain` starts at 0, so the block starts as the identity
    and the generator first learns local structure, then how much long-range context to mix in."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner, values = max(1, channels // 8), max(1, channels // 2)
        self.query = sn_conv(channels, inner, 1, bias=False)
        self.key = sn_conv(channels, inner, 1, bias=False)
        self.value = sn_conv(channels, values, 1, bias=False)
        self.out = sn_conv(values, channels, 1, bias=False)
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (p(x).flatten(2).transpose(1, 2) for p in (self.query, self.key, self.value))  # [B, N, *]
        mixed = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # SAGAN: unscaled dot products
        return x + self.gain * self.out(mixed.transpose(1, 2).reshape(b, -1, h, w))


class ResidualGenerator(nn.Module):
    """G(z, e): z [B, latent_dim], unit e [B, embed_dim] -> images [B, 1, S, S] in [-1, 1], S a power of
    two >= 32. Channels: DCGAN's widths at 4x4 .. S/2 (`g_base` at S/2), `g_base` at S too.
    Self-attention after the block that reaches `attention_size` (default S/4, at least 8: 16 at 64 px,
    where an N^2 attention map is still cheap)."""

    def __init__(
        self,
        image_size: int,
        latent_dim: int,
        embed_dim: int,
        g_base: int,
        attention_size: int | None = None,
    ) -> None:
        super().__init__()
        n = n_doublings(image_size)
        attention_size = attention_size or max(8, image_size // 4)
        sides = [4 * 2 ** (i + 1) for i in range(n)]  # the side after each block
        if attention_size not in sides:
            raise ValueError(f"attention_size must be one of {sides}, got {attention_size}")
        self.config = {
            "image_size": image_size,
            "latent_dim": latent_dim,
            "embed_dim": embed_dim,
            "g_base": g_base,
            "attention_size": attention_size,
        }
        widths = [*generator_widths(image_size, g_base), g_base]  # maps at 4, 8, .., S
        self.stem = spectral_norm(nn.Linear(latent_dim, widths[0] * 16))
        self.blocks = nn.ModuleList(ResidualUpBlock(cin, cout, embed_dim) for cin, cout in pairwise(widths))
        self.attention_after = sides.index(attention_size)
        self.attention = SelfAttention(widths[self.attention_after + 1])
        self.out_norm = ConditionalBatchNorm2d(widths[-1], embed_dim)
        self.to_image = sn_conv(widths[-1], 1, 3)
        init_residual_(self)

    @property
    def latent_dim(self) -> int:
        return self.config["latent_dim"]

    def forward(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        e = e.to(z.dtype)
        x = self.stem(z).view(len(z), -1, 4, 4)
        for i, block in enumerate(self.blocks):
            x = block(x, e)
            if i == self.attention_after:
                x = self.attention(x)
        return torch.tanh(self.to_image(F.relu(self.out_norm(x, e))))


class ConvDiscriminator(ProjectionDiscriminator):
    """D(x, e) = psi(phi(x)) [+ <V e, phi(x)>]: phi is stride-2 4x4 convs (LeakyReLU 0.2) down to 4x4,
    spectral norm by default. With `projection` (default) D judges realness AND image-embedding
    agreement; without it D is unconditional and only G's consistency term ties images to e.
    With projection it is exactly nets.ProjectionDiscriminator (same layers, same init)."""

    def __init__(
        self, image_size: int, embed_dim: int, d_base: int, spectral: bool = True, projection: bool = True
    ) -> None:
        super().__init__(image_size, embed_dim, d_base, spectral)
        self.config["projection"] = projection
        if not projection:
            del self.projection

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        if self.config["projection"]:
            return super().forward(x, e)
        return self.realness(self.features(x)).squeeze(1)


@torch.no_grad()
def init_residual_(module: nn.Module) -> nn.Module:
    """Xavier-uniform conv and linear weights, zero biases (the SNGAN/BigGAN choice for residual nets;
    spectral norm fixes the scale, the init sets the directions). Conditional-norm maps keep their zeros,
    the attention gain its 0."""
    keep = {id(c.gamma) for c in module.modules() if isinstance(c, ConditionalBatchNorm2d)}
    keep |= {id(c.beta) for c in module.modules() if isinstance(c, ConditionalBatchNorm2d)}
    for m in module.modules():
        if id(m) in keep or not isinstance(m, nn.Conv2d | nn.Linear):
            continue
        weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
        nn.init.xavier_uniform_(weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module
