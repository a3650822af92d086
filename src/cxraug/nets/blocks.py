"""DCGAN building blocks shared by every generator and discriminator.

Small factories instead of copies: a stride-2 transposed-conv up block, a stride-2 conv down block (with
optional spectral norm), batch norm conditioned on a vector, and the N(0, 0.02) DCGAN weight init.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def n_doublings(image_size: int) -> int:
    """Stride-2 stages between a 4x4 map and image_size (64 px: 4)."""
    steps = math.log2(image_size) - 2
    if image_size < 32 or not steps.is_integer():
        raise ValueError(f"image_size must be a power of two >= 32, got {image_size}")
    return int(steps)


def generator_widths(image_size: int, base: int) -> list[int]:
    """Channels of the maps at 4x4, 8x8, ..., image_size/2 (64 px, base 64: [512, 256, 128, 64])."""
    n = n_doublings(image_size)
    return [base * 2 ** (n - 1 - i) for i in range(n)]


def discriminator_widths(image_size: int, base: int) -> list[int]:
    """Channels after each stride-2 conv, from image_size/2 down to 4x4 (64 px: [64, 128, 256, 512])."""
    return list(reversed(generator_widths(image_size, base)))


def conv(
    cin: int,
    cout: int,
    kernel: int = 4,
    stride: int = 2,
    padding: int = 1,
    bias: bool = True,
    spectral: bool = False,
) -> nn.Module:
    layer = nn.Conv2d(cin, cout, kernel, stride, padding, bias=bias)
    return nn.utils.parametrizations.spectral_norm(layer) if spectral else layer


def linear(fin: int, fout: int, bias: bool = True, spectral: bool = False) -> nn.Module:
    layer = nn.Linear(fin, fout, bias=bias)
    return nn.utils.parametrizations.spectral_norm(layer) if spectral else layer


def up_block(cin: int, cout: int) -> nn.Sequential:
    """DCGAN upsampling: 4x4 transposed conv, stride 2 (doubles the side), batch norm, ReLU."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


def down_block(cin: int, cout: int, norm: bool = True, spectral: bool = False) -> nn.Sequential:
    """DCGAN downsampling: 4x4 conv, stride 2 (halves the side), optional batch norm, LeakyReLU(0.2)."""
    layers: list[nn.Module] = [conv(cin, cout, bias=not norm, spectral=spectral)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


def to_image(cin: int) -> nn.Sequential:
    """Last up step: transposed conv to one channel at full size, tanh to [-1, 1]."""
    return nn.Sequential(nn.ConvTranspose2d(cin, 1, 4, 2, 1, bias=False), nn.Tanh())


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose scale and shift come from a conditioning vector e, per sample:
    y = BN(x) * (1 + W_gamma e) + W_beta e. W starts at zero, so an untrained layer is plain BN."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Linear(cond_dim, channels, bias=False)
        self.beta = nn.Linear(cond_dim, channels, bias=False)
        nn.init.zeros_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma = 1 + self.gamma(cond)[:, :, None, None]
        beta = self.beta(cond)[:, :, None, None]
        return self.norm(x) * gamma + beta


@torch.no_grad()
def init_dcgan_(module: nn.Module) -> nn.Module:
    """DCGAN init: conv and linear weights N(0, 0.02), batch-norm scales N(1, 0.02), biases zero.
    Conditional-norm projections keep their zero init (they must start as plain BN)."""
    zero_init = {
        id(p) for c in module.modules() if isinstance(c, ConditionalBatchNorm2d) for p in (c.gamma, c.beta)
    }
    for m in module.modules():
        if id(m) in zero_init:
            continue
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            weight = m.parametrizations.weight.original if hasattr(m, "parametrizations") else m.weight
            nn.init.normal_(weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return module
