"""What OpenGAN training sends to MLflow besides its step losses: the per-epoch sample grids."""

from __future__ import annotations

import torch

from cxraug.core.tracking import log_labelled_grid
from cxraug.gans.opengan.proposer import OpenganProposer


@torch.no_grad()
def log_samples(
    proposer: OpenganProposer,
    z: torch.Tensor,
    e: torch.Tensor,
    per_class: int,
    epoch: int,
    epochs: int,
) -> dict[str, float]:
    """A grid of G(z, e) for the fixed inputs, a row per class, at step `epoch` of the image slider (the
    last epoch also under `samples/by_class/final`, a one-step card that opens on it), and how well the
    samples agree with their class in embedding space."""
    device = proposer.device
    images = proposer.generator(z.to(device), e.to(device))
    hits, realness, rows = [], [], []
    for c in range(len(proposer.classes)):
        block = slice(c * per_class, (c + 1) * per_class)
        real_c, _, hit = proposer.judge(images[block], e[block].to(device), c)
        hits.append(hit.float().mean().item())
        realness.append(real_c.mean().item())
        rows.append(images[block].float().cpu())
    when = f"epoch {epoch} of {epochs}" if epoch else f"before training (0 of {epochs} epochs)"
    for key in ("samples/by_class", "samples/by_class/final") if epoch == epochs else ("samples/by_class",):
        log_labelled_grid(rows, proposer.classes, f"OpenGAN samples, {when}", key=key, step=epoch)
    return {
        "samples_prototype_accuracy": sum(hits) / len(hits),
        "samples_realness": sum(realness) / len(realness),
    }
