"""What one BAGAN training step computes: the losses as small pure functions, and the autoencoder and GAN
steps that apply them (pytorch/examples dcgan style: explicit zero_grad / backward / step)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cxraug.core import distributed
from cxraug.core.distributed import WHOLE, Shard
from cxraug.core.runtime import Precision

# draw(n) -> (latents [n, d] on the device, the class each latent was drawn from [n] on the device)
LatentDraw = Callable[[int], tuple[torch.Tensor, torch.Tensor]]


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in the [-1, 1] pixel range (BAGAN's autoencoder loss)."""
    return F.mse_loss(reconstruction.float(), target.float())


def fake_class(logits: torch.Tensor) -> int:
    """Index of the discriminator's "generated" output: the last of its K+1 logits."""
    return logits.shape[1] - 1


def discriminator_loss(
    logits_real: torch.Tensor, labels: torch.Tensor, logits_fake: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy over the K+1 outputs of one batch of real and generated images together: each real
    image against its class, each generated image against class K ("generated")."""
    targets_fake = torch.full((len(logits_fake),), fake_class(logits_fake), device=labels.device)
    logits = torch.cat([logits_real, logits_fake]).float()
    return F.cross_entropy(logits, torch.cat([labels, targets_fake]))


def generator_loss(logits_fake: torch.Tensor, sampled_classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of D's K+1 outputs on generated images against the class each latent was drawn
    from: G must make images that D takes for real images of that class."""
    return F.cross_entropy(logits_fake.float(), sampled_classes)


def accuracy(logits: torch.Tensor, targets: torch.Tensor | int) -> torch.Tensor:
    return (logits.argmax(1) == targets).float().mean()


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
) -> dict[str, torch.Tensor]:
    """One D update on `real` plus n_fake generated images, then one G update on len(real) + n_fake
    generated images (BAGAN's batch sizes, see fakes_per_step).

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
    d_loss = discriminator_loss(logits_real, labels, logits_fake)
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


def adam(params, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    """Adam with the fused kernel where this build has it for the parameters' device (measured on CPU:
    an optimiser step 10-20x faster than the default for-loop implementation)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, betas=betas)
