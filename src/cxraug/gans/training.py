"""Pieces every GAN/embedder training loop here shares: a resumable batch order and fused optimisers."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from cxraug.data.datasets import balanced_indices, batch_indices


def steps_per_epoch(n_images: int, batch_size: int, configured: int | None) -> int:
    """`configured`, or one pass over the training images (at least one step)."""
    return configured if configured is not None else max(1, n_images // batch_size)


def epoch_batches(
    labels: torch.Tensor, batch_size: int, steps: int, balanced: bool, seed: int, epoch: int
) -> list[torch.Tensor]:
    """The index batches of one epoch. They come from a generator seeded by (seed, epoch), not from the
    training generator, so a run resumed mid-epoch rebuilds the same order and skips what it has done."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    labels = labels.cpu()
    if balanced:  # every class equally likely: the rare findings are seen as often as No Finding
        return list(balanced_indices(labels, steps * batch_size, generator).view(steps, batch_size))
    batches: list[torch.Tensor] = []
    while len(batches) < steps:  # several shuffled passes when an epoch is longer than the data
        batches += batch_indices(len(labels), batch_size, generator)
    return batches[:steps]


def adam(
    params: Iterable[torch.nn.Parameter],
    device: torch.device,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    weight_decay: float = 0.0,
    decoupled: bool = False,
) -> torch.optim.Optimizer:
    """Adam(W) with the fused kernel where the device has one (on CPU: ~20x faster optimiser steps)."""
    fused = device.type in ("cpu", "cuda", "mps")
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    return kind(params, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
