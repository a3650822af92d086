"""Differentiable augmentation (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020): D sees every image, real or generated, through the same random transforms,
in D's update and in G's, so gradients reach G through them. D cannot then memorise the few real images
of a small class, and G is still trained towards the un-augmented images (the transforms are applied to
both sides alike, so they cancel out of what G must match).

Policies (`augment` is a list of them, applied in this order): translation (a shift of up to 1/8 of the
side, edges replicated) and cutout (a zeroed square of half the side, at a random place). Draws come
from torch's global RNG on the images' device, which checkpoints save and restore.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

POLICIES = ("translation", "cutout")
TRANSLATION = 1 / 8  # largest shift, as a share of the side
CUTOUT = 1 / 2  # side of the cut-out square, as a share of the image's


def translate(x: torch.Tensor, ratio: float = TRANSLATION) -> torch.Tensor:
    """Each image [N, C, H, W] shifted by its own whole-pixel offset in [-ratio·side, ratio·side]."""
    n, _, h, w = x.shape
    sy, sx = max(1, round(h * ratio)), max(1, round(w * ratio))
    dy = torch.randint(-sy, sy + 1, (n, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1), device=x.device)
    padded = F.pad(x, (sx, sx, sy, sy), mode="replicate")
    rows = (torch.arange(h, device=x.device) + sy - dy)[:, :, None]  # [N, H, 1]
    cols = (torch.arange(w, device=x.device) + sx - dx)[:, None, :]  # [N, 1, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = CUTOUT) -> torch.Tensor:
    """Each image with one square of side ratio·side set to 0 (mid-grey in [-1, 1]), centre anywhere."""
    n, _, h, w = x.shape
    ch, cw = max(1, round(h * ratio)), max(1, round(w * ratio))
    top = torch.randint(0, h, (n, 1, 1), device=x.device) - ch // 2  # the square may overhang an edge
    left = torch.randint(0, w, (n, 1, 1), device=x.device) - cw // 2
    ys = torch.arange(h, device=x.device)[None, :, None] - top
    xs = torch.arange(w, device=x.device)[None, None, :] - left
    inside = (ys >= 0) & (ys < ch) & (xs >= 0) & (xs < cw)
    return x * (~inside)[:, None].to(x.dtype)


def diffaugment(x: torch.Tensor, policies: list[str]) -> torch.Tensor:
    """x through every policy in `policies`, in POLICIES' order; [] returns x itself."""
    unknown = set(policies) - set(POLICIES)
    if unknown:
        raise ValueError(f"augment policies must be among {POLICIES}, got {sorted(unknown)}")
    if "translation" in policies:
        x = translate(x)
    if "cutout" in policies:
        x = cutout(x)
    return x
