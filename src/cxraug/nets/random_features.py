"""A fixed random convolutional network: the feature space of the GAN metrics that no generator was
trained, conditioned or filtered with, and that never saw an image at all.

Randomly initialised conv nets are a known baseline feature space for Fréchet distances and
precision/recall (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative models",
random embeddings): they respond to local texture, contrast and layout without any training set's
notion of a class. The weights are a function of `seed` alone (Kaiming-normal convolutions, zero biases,
drawn from a private generator), so two builds with one seed are the same network on every machine.
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS = (16, 32, 64, 64)  # four stride-2 3x3 convolutions: 64 px -> 4 x 4
POOL = 2  # the last map average-pooled to 2 x 2: coarse layout kept, 256 features


class RandomConvFeatures(nn.Module):
    """[-1, 1] grayscale images [B, 1, H, W] -> float32 [B, 256] features of a frozen random conv net."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        layers, width = [], 1
        for out in CHANNELS:
            conv = nn.Conv2d(width, out, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * (2.0 / (width * 9)) ** 0.5)
                conv.bias.zero_()
            layers += [conv, nn.ReLU()]
            width = out
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(POOL), nn.Flatten())
        self.seed = seed
        self.requires_grad_(False).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
