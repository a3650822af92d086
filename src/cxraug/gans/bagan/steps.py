"""BAGAN's autoencoder and GAN steps, applying the losses of losses.py (pytorch/examples dcgan style:
explicit zero_grad / backward / step)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from cxraug.core import distributed
from cxraug.core.distributed import WHOLE, Shard
from cxraug.core.runtime import Precision
from cxraug.gans.bagan.losses import (
    accuracy,
    discriminator_loss,
    fake_class,
    generator_loss,
    reconstruction_loss,
)

# draw(n) -> (latents [n, d] on the device, the class each latent was drawn from [n] on the device)
LatentDraw = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def fakes_per_step(batch_size: int, n_classes: int) -> int:
    """BAGAN shows D ceil(B/K) generated images beside B real ones: "generated" is about as frequent as
    one real class, the prior a (K+1)-way classifier should learn."""
    return math.ceil(batch_size / n_classes)


def autoencoder_step(
    encoder: nn.Module,
    decoder: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    precision: Precision,
    shard: Shard = WHOLE,
    batch: int | None = None,
) -> torch.Tensor:
    """One step on `images`: under torchrun this rank's rows of a global batch of `batch` images (the
    returned loss is then this rank's term of the global mean, see Shard.scale)."""
    optimizer.zero_grad(set_to_none=True)
    with precision.autocast():
        loss = reconstruction_loss(decoder(encoder(images)), images)
    loss = shard.scale(loss, len(images), batch or len(images))
    loss.backward()
    optimizer.step()
    return loss.detach()


def gan_step(
    generator: nn.Module,
    discriminator: nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    labels: torch.Tensor,
    draw: LatentDraw,
    n_fake: int,
    precision: Precision,
    shard: Shard = WHOLE,
    batch: int | None = None,
    class_weights: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """One D update on `real` plus n_fake generated images, then one G update on len(real) + n_fake
    generated images (BAGAN's batch sizes, see fakes_per_step); `class_weights`: see discriminator_loss.

    Under torchrun `real` and `labels` are this rank's rows of a global batch of `batch` images; every
    rank draws the global latents and keeps its rows, G and D are DDP-wrapped, and the returned values are
    this rank's terms of the global means. The pass that makes D's fakes needs no gradients and the D pass
    inside G's loss only carries gradients to the images: both use the plain modules."""
    batch = batch or len(real)
    z = shard.take(draw(n_fake)[0])
    with torch.no_grad(), precision.autocast():
        fake = distributed.unwrap(generator)(z)
    opt_d.zero_grad(set_to_none=True)
    with precision.autocast():
        logits = discriminator(torch.cat([real, fake.to(real.dtype)])).float()
    logits_real, logits_fake = logits.split([len(real), len(fake)])
    d_loss = discriminator_loss(logits_real, labels, logits_fake, class_weights)
    d_loss = shard.scale(d_loss, len(logits), batch + n_fake)
    d_loss.backward()
    opt_d.step()

    z, classes = (shard.take(t) for t in draw(batch + n_fake))
    judge = distributed.unwrap(discriminator)
    judge.requires_grad_(False)  # G's loss needs gradients through D, not into it
    opt_g.zero_grad(set_to_none=True)
    with precision.autocast():
        logits_g = judge(generator(z)).float()
    g_loss = shard.scale(generator_loss(logits_g, classes), len(z), batch + n_fake)
    g_loss.backward()
    opt_g.step()
    judge.requires_grad_(True)
    return {
        "d_loss": d_loss.detach(),
        "g_loss": g_loss.detach(),
        "d_acc_real": shard.scale(accuracy(logits_real.detach(), labels), len(real), batch),
        "d_acc_fake": shard.scale(accuracy(logits_fake.detach(), fake_class(logits_fake)), len(fake), n_fake),
    }
