"""BAGAN's networks. One conv trunk serves the encoder (head: latent code) and the discriminator (head: K+1
logits, the last one "fake"); the generator is first trained as the autoencoder's decoder.

Our variant of BAGAN (Mariani et al. 2018) upsamples with DCGAN transposed convolutions instead of
nearest-neighbour upsampling + conv; the trunk keeps BAGAN's LeakyReLU + dropout and has no batch norm,
so a discriminator score does not depend on the other images in its batch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from cxraug.nets.blocks import (
    discriminator_widths,
    down_block,
    generator_widths,
    init_dcgan_,
    linear,
    to_image,
    up_block,
)


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild the networks from their saved weights (stored in bagan.json)."""

    image_size: int
    latent_dim: int
    g_base: int
    d_base: int
    d_dropout: float
    n_classes: int

    def to_dict(self) -> dict:
        return asdict(self)


class Generator(nn.Module):
    """latent [B, latent_dim] -> image [B, 1, S, S] in [-1, 1]: dense to a 4x4 map, DCGAN up blocks, tanh."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        widths = generator_widths(arch.image_size, arch.g_base)
        self.project = nn.Sequential(
            nn.Linear(arch.latent_dim, widths[0] * 16, bias=False),
            nn.Unflatten(1, (widths[0], 4, 4)),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(True),
        )
        self.body = nn.Sequential(
            *(up_block(cin, cout) for cin, cout in zip(widths, widths[1:], strict=False)),
            to_image(widths[-1]),
        )
        init_dcgan_(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.project(z))


class ConvNet(nn.Module):
    """image [B, 1, S, S] -> [B, out_features]: a trunk of stride-2 4x4 convs (LeakyReLU 0.2, dropout) down
    to 4x4, flattened, then one linear head. Encoder and discriminator are this net with different heads."""

    def __init__(self, arch: Architecture, out_features: int) -> None:
        super().__init__()
        widths = discriminator_widths(arch.image_size, arch.d_base)
        layers: list[nn.Module] = []
        for cin, cout in zip([1, *widths[:-1]], widths, strict=True):
            layers.append(down_block(cin, cout, norm=False))
            if arch.d_dropout > 0:
                layers.append(nn.Dropout(arch.d_dropout))
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.head = linear(widths[-1] * 16, out_features)
        init_dcgan_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))


def encoder(arch: Architecture) -> ConvNet:
    """image -> latent code [B, latent_dim], He-initialised (init_he_)."""
    return init_he_(ConvNet(arch, arch.latent_dim))


@torch.no_grad()
def init_he_(net: ConvNet) -> ConvNet:
    """He (Kaiming) normal weights for LeakyReLU(0.2), biases zero. DCGAN's N(0, 0.02) assumes batch
    norm after each conv; this trunk has none, so it shrinks the signal layer by layer (at 64 px, width
    16: codes of std 7e-4 at init) and the autoencoder starts from a decoder that cannot see its input.
    Measured on the digits (docs/bagan.md, "Every replicate seed"): at seed 1 it stalled at validation MSE
    0.10 (seeds 0, 2: 0.009); He init keeps the codes' scale (std 0.9 at init) and it converges."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
            nn.init.zeros_(m.bias)
    return net


def discriminator(arch: Architecture) -> ConvNet:
    """image -> K+1 logits: one per class, the last for "generated"."""
    return ConvNet(arch, arch.n_classes + 1)


@dataclass
class BaganNets:
    encoder: ConvNet
    decoder: Generator
    generator: Generator
    discriminator: ConvNet

    @classmethod
    def build(cls, arch: Architecture) -> BaganNets:
        return cls(encoder(arch), Generator(arch), Generator(arch), discriminator(arch))

    def modules(self) -> dict[str, nn.Module]:
        return {
            "encoder": self.encoder,
            "decoder": self.decoder,
            "generator": self.generator,
            "discriminator": self.discriminator,
        }

    def apply(self, fn) -> BaganNets:
        """The same nets after fn (e.g. Precision.module: device and memory layout)."""
        return BaganNets(*(fn(m) for m in (self.encoder, self.decoder, self.generator, self.discriminator)))


@torch.no_grad()
def init_gan_from_autoencoder(nets: BaganNets, init_discriminator: bool) -> None:
    """BAGAN's initialisation: G starts as the trained decoder (weights and batch-norm statistics); D's
    trunk starts as the trained encoder's when asked (its K+1 head keeps its own random init)."""
    nets.generator.load_state_dict(nets.decoder.state_dict())
    if init_discriminator:
        nets.discriminator.trunk.load_state_dict(nets.encoder.trunk.state_dict())
