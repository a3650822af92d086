"""OpenGAN-style networks (Ditria, Meyer & Drummond, ACCV 2020): a generator conditioned per sample on a
metric-learning embedding e through feature normalisation, and a projection discriminator D(x, e).

This is the DCGAN-style pair (`train_opengan.generator: dcgan`); the published residual generator and its
discriminator are in resnet.py, the losses in losses.py. Both keep the project's one signature:
`generator(z, cond)` -> images in [-1, 1] and `discriminator(x, cond)` -> one realness logit per image.
"""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from cxraug.gans.opengan.losses import (  # noqa: F401  (moved to losses.py; imported from here too)
    consistency_loss,
    discriminator_loss,
    generator_loss,
)
from cxraug.nets.blocks import (
    ConditionalBatchNorm2d,
    discriminator_widths,
    down_block,
    generator_widths,
    init_dcgan_,
    linear,
    to_image,
)


class ConditionalUpBlock(nn.Module):
    """DCGAN up step whose batch norm takes its scale and shift from e (4x4 transposed conv, CBN, ReLU).
    `first`: from the 1x1 noise vector to a 4x4 map instead of doubling the side."""

    def __init__(self, cin: int, cout: int, embed_dim: int, first: bool = False) -> None:
        super().__init__()
        stride, padding = (1, 0) if first else (2, 1)
        self.conv = nn.ConvTranspose2d(cin, cout, 4, stride, padding, bias=False)
        self.norm = ConditionalBatchNorm2d(cout, embed_dim)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x), e))


class Generator(nn.Module):
    """G(z, e): z [B, latent_dim] and a unit embedding e [B, embed_dim] -> images [B, 1, S, S] in [-1, 1].

    z enters at the bottom; e enters only through the conditional batch norm of EVERY up block (gamma =
    1 + W_g e, beta = W_b e), so the class information shapes the features at every scale, and a new e
    (a class never trained on) needs no new parameters."""

    def __init__(self, image_size: int, latent_dim: int, embed_dim: int, g_base: int) -> None:
        super().__init__()
        self.config = {
            "image_size": image_size,
            "latent_dim": latent_dim,
            "embed_dim": embed_dim,
            "g_base": g_base,
        }
        widths = generator_widths(image_size, g_base)
        self.blocks = nn.ModuleList(
            [ConditionalUpBlock(latent_dim, widths[0], embed_dim, first=True)]
            + [ConditionalUpBlock(cin, cout, embed_dim) for cin, cout in pairwise(widths)]
        )
        self.to_image = to_image(widths[-1])
        init_dcgan_(self)

    @property
    def latent_dim(self) -> int:
        return self.config["latent_dim"]

    def forward(self, z: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        x = z[:, :, None, None]
        for block in self.blocks:
            x = block(x, e)
        return self.to_image(x)


class ProjectionDiscriminator(nn.Module):
    """D(x, e) = psi(phi(x)) + <V e, phi(x)> (Miyato & Koyama 2018 with a continuous condition).

    phi: stride-2 4x4 convs down to 4x4 (no pooling), flattened. The first term judges realness alone;
    the projection term judges whether image and embedding agree, so a real image paired with another
    class's embedding scores differently. Spectral norm (optional) replaces batch norm."""

    def __init__(self, image_size: int, embed_dim: int, d_base: int, spectral: bool = True) -> None:
        super().__init__()
        self.config = {
            "image_size": image_size,
            "embed_dim": embed_dim,
            "d_base": d_base,
            "spectral": spectral,
        }
        widths = discriminator_widths(image_size, d_base)
        self.features = nn.Sequential(
            down_block(1, widths[0], norm=False, spectral=spectral),
            *(down_block(cin, cout, norm=not spectral, spectral=spectral) for cin, cout in pairwise(widths)),
            nn.Flatten(),
        )
        feature_dim = widths[-1] * 4 * 4
        self.realness = linear(feature_dim, 1, spectral=spectral)
        self.projection = linear(embed_dim, feature_dim, bias=False, spectral=spectral)
        init_dcgan_(self)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        phi = self.features(x)
        return self.realness(phi).squeeze(1) + (self.projection(e.to(phi.dtype)) * phi).sum(1)
