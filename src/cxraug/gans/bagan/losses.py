"""BAGAN's losses as small pure functions: the autoencoder's reconstruction error and the K+1-way
cross-entropies of D (real images -> their class, generated -> K) and G (generated -> the class its latent
was drawn from)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error in the [-1, 1] pixel range (BAGAN's autoencoder loss)."""
    return F.mse_loss(reconstruction.float(), target.float())


def fake_class(logits: torch.Tensor) -> int:
    """Index of the discriminator's "generated" output: the last of its K+1 logits."""
    return logits.shape[1] - 1


def discriminator_loss(
    logits_real: torch.Tensor,
    labels: torch.Tensor,
    logits_fake: torch.Tensor,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy over the K+1 outputs of one batch of real and generated images together: each real
    image against its class, each generated image against class K ("generated"). `class_weights` [K+1]
    (optional) multiply each image's term, and the result stays a mean over images: a sum over rows, so
    the shards of a torchrun batch add up to the whole batch's loss (torch's `weight=` divides by the
    batch's summed weights, which no rank knows). Balanced weights average ~1 over a batch anyway."""
    targets_fake = torch.full((len(logits_fake),), fake_class(logits_fake), device=labels.device)
    logits = torch.cat([logits_real, logits_fake]).float()
    targets = torch.cat([labels, targets_fake])
    if class_weights is None:
        return F.cross_entropy(logits, targets)
    per_image = F.cross_entropy(logits, targets, reduction="none")
    return (class_weights.to(logits.device, torch.float32)[targets] * per_image).mean()


def balanced_class_weights(counts: torch.Tensor) -> torch.Tensor:
    """[K+1] weights for discriminator_loss: each real class c gets mean(count) / count_c (so every class
    weighs as much in D's loss as an average one), "generated" gets 1."""
    counts = counts.double().clamp(min=1)
    return torch.cat([counts.mean() / counts, torch.ones(1, dtype=torch.float64)]).float()


def generator_loss(logits_fake: torch.Tensor, sampled_classes: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of D's K+1 outputs on generated images against the class each latent was drawn
    from: G must make images that D takes for real images of that class."""
    return F.cross_entropy(logits_fake.float(), sampled_classes)


def accuracy(logits: torch.Tensor, targets: torch.Tensor | int) -> torch.Tensor:
    return (logits.argmax(1) == targets).float().mean()
