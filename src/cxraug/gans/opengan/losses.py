"""OpenGAN's training losses: the adversarial terms of D and G, and the consistency term that asks the
frozen metric embedder f to place a generated image where its conditioning embedding e is.

Consistency, per `train_opengan.consistency` (weighted by `consistency_weight` in G's loss):
- mse (the reference's, with weight 0.01): mean over batch and dimensions of (f(G(z, e)) - e)^2; for unit
  vectors in D dimensions that is (2 - 2 cos) / D, so it is gentle: the adversarial term dominates;
- cosine (this project's earlier default, with weight 1): 1 - cos(f(G(z, e)), e), averaged over the batch.
f's outputs and e are unit vectors, so cos is their dot product. f is frozen; gradients reach the images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CONSISTENCY_KINDS = ("mse", "cosine")


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, kind: str) -> torch.Tensor:
    """hinge: E[max(0, 1 - D(x))] + E[max(0, 1 + D(G(z)))]; nonsaturating: the logistic GAN loss."""
    real, fake = real.float(), fake.float()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return F.softplus(-real).mean() + F.softplus(fake).mean()


def generator_loss(fake: torch.Tensor, kind: str) -> torch.Tensor:
    """hinge: -E[D(G(z))]; nonsaturating: E[softplus(-D(G(z)))] = -E[log sigmoid(D(G(z)))]."""
    fake = fake.float()
    return -fake.mean() if kind == "hinge" else F.softplus(-fake).mean()


def consistency_term(embedded: torch.Tensor, e: torch.Tensor, kind: str) -> torch.Tensor:
    """The consistency term between embeddings of generated images [B, D] and their conditioning [B, D]."""
    if kind not in CONSISTENCY_KINDS:
        raise ValueError(f"consistency must be one of {CONSISTENCY_KINDS}, got {kind!r}")
    embedded, e = embedded.float(), e.float()
    if kind == "mse":
        return F.mse_loss(embedded, e)
    return 1 - (embedded * e).sum(1).mean()


def consistency_loss(
    embedder: nn.Module, images: torch.Tensor, e: torch.Tensor, kind: str = "cosine"
) -> torch.Tensor:
    """consistency_term(f(images), e): the frozen embedder's weights get no gradient, the images do."""
    return consistency_term(embedder(images), e, kind)


def mode_seeking_loss(
    a: torch.Tensor, b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor, eps: float = 1e-5
) -> torch.Tensor:
    """MSGAN's term (Mao et al., "Mode Seeking GANs", CVPR 2019) for images a = G(z_a, e), b = G(z_b, e)
    of the same e: 1 / (mean |a - b| / mean |z_a - z_b| + eps). G lowers it by moving apart what two
    noise vectors draw for one conditioning, against the within-class collapse of a conditional G."""
    ratio = (a.float() - b.float()).abs().mean() / (z_a.float() - z_b.float()).abs().mean()
    return 1 / (ratio + eps)
