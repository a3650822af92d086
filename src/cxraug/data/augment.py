"""Standard (classic) augmentation on uint8 image tensors, batched, on whatever device they live on.

One call transforms a whole batch: a small random affine map per image (rotation, translation, scale)
applied with `affine_grid`/`grid_sample`, then brightness and contrast. Every random number comes from
an explicit CPU `torch.Generator`, so the same generator state gives the same images on any device.
Horizontal flips are off by default: a chest X-ray has a side (the heart is on the patient's left).

`augmented_copies` builds the `standard_aug_<n>` training extra: n new images per class, each a
transformed copy of a real TRAINING image of that class (the paper's counterpart of n synthetic images).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cxraug.core.config import AugmentParams


def _uniform(n: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    """n draws from U(-bound, bound)."""
    return (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1).float() * bound


def random_transform(
    images: torch.Tensor, settings: AugmentParams, generator: torch.Generator
) -> torch.Tensor:
    """uint8 [B, H, W] -> uint8 [B, H, W], each image independently rotated, shifted, zoomed, flipped
    (if enabled), brightened and contrasted. Runs on `images.device`; the pixels leave in [0, 255]."""
    b = images.shape[0]
    angle = _uniform(b, math.radians(settings.rotation_deg), generator)
    shift = _uniform(2 * b, 2 * settings.translate, generator).view(b, 2)  # grid units: the side is 2
    zoom = 1 + _uniform(b, settings.scale, generator)
    flip = torch.rand(b, generator=generator) < settings.hflip_probability
    offset = _uniform(b, settings.brightness, generator)
    factor = 1 + _uniform(b, settings.contrast, generator)

    # Output pixel p samples the input at A p + t: A = R(angle) / zoom (zoom > 1 magnifies), x mirrored
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    mirror = torch.where(flip, -1.0, 1.0)
    theta = torch.stack(
        [torch.stack([cos * mirror, -sin, shift[:, 0]], 1), torch.stack([sin * mirror, cos, shift[:, 1]], 1)],
        1,
    ).to(images.device)

    x = images.unsqueeze(1).float().div_(255.0)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # 'border' repeats the edge pixels: no black or gray wedges that a classifier could learn
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor.view(b, 1, 1, 1).to(x.device) + mean + offset.view(b, 1, 1, 1).to(x.device)
    return x.squeeze(1).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8)


def augmented_copies(
    images: torch.Tensor,
    labels: torch.Tensor,
    n_per_class: int,
    settings: AugmentParams,
    generator: torch.Generator,
    n_classes: int,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n_per_class transformed copies of every class's images (sources drawn uniformly with replacement
    within the class): uint8 [K * n, H, W] on images.device and int64 labels, class by class. A class
    without images gets none (prepare guarantees every class in train)."""
    out_images, out_labels = [], []
    for c in range(n_classes):
        members = torch.nonzero(labels.cpu() == c).flatten()
        if len(members) == 0 or n_per_class == 0:
            continue
        sources = members[torch.randint(len(members), (n_per_class,), generator=generator)]
        for start in range(0, n_per_class, batch_size):
            chunk = sources[start : start + batch_size].to(images.device)
            out_images.append(random_transform(images[chunk], settings, generator))
        out_labels.append(torch.full((n_per_class,), c, dtype=torch.int64))
    if not out_images:
        return images[:0], labels[:0]
    return torch.cat(out_images), torch.cat(out_labels).to(labels.device)
