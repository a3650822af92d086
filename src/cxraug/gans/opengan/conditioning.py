"""Where the generator's conditioning embeddings come from at sampling time (and, last, the training-like
draws an EMA of G takes its batch-norm statistics from).

A class is known only through embeddings of real images of it (a "bank": the training images of a
trained class, or a handful of exemplars of a class the GAN never saw). Two ways to draw e from a bank:
- exemplars: e = the embedding of a random bank image (per sample), the conditioning G was trained on;
- gaussian: e ~ N(mean, Ledoit-Wolf covariance) of the bank, projected back onto the unit sphere where
  the embedder's outputs live; new embeddings between the real ones, at the risk of leaving the data.
Draws use an explicit torch.Generator on the CPU, so they are reproducible on any device.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from cxraug.core.config import TrainOpenganParams
from cxraug.core.errors import CxraugError
from cxraug.core.training import epoch_batches


class Conditioning(Protocol):
    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n unit embeddings [n, D] (CPU, float32)."""


class ExemplarConditioning:
    def __init__(self, bank: torch.Tensor) -> None:
        if len(bank) == 0:
            raise CxraugError("cannot condition on a class without any image embeddings")
        self.bank = bank.detach().float().cpu()

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.bank[torch.randint(len(self.bank), (n,), generator=generator)]


class GaussianConditioning:
    def __init__(self, bank: torch.Tensor) -> None:
        if len(bank) == 0:
            raise CxraugError("cannot condition on a class without any image embeddings")
        x = bank.detach().double().cpu().numpy()
        self.mean = torch.from_numpy(x.mean(0)).float()
        if len(x) > 1:  # shrinkage keeps the covariance well-conditioned when images are fewer than dims
            from sklearn.covariance import LedoitWolf

            cov = LedoitWolf().fit(x).covariance_
        else:
            cov = np.zeros((x.shape[1], x.shape[1]))
        cov = torch.from_numpy(cov) + 1e-6 * torch.eye(x.shape[1], dtype=torch.float64)
        self.scale = torch.linalg.cholesky(cov).float()

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(n, len(self.mean), generator=generator)
        return F.normalize(self.mean + noise @ self.scale.T, dim=1)


def make_conditioning(mode: str, bank: torch.Tensor) -> Conditioning:
    return GaussianConditioning(bank) if mode == "gaussian" else ExemplarConditioning(bank)


def prototype(bank: torch.Tensor) -> torch.Tensor:
    """The class's direction: the normalised mean of its embeddings."""
    return F.normalize(bank.float().mean(0), dim=0)


STANDING_BATCHES = 16  # BigGAN's count of standing-statistics batches


def standing_inputs(
    labels: torch.Tensor, embeddings: torch.Tensor, params: TrainOpenganParams, epoch: int, device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(z, e) batches as training draws them (e: embeddings of class-balanced real images) for the EMA's
    batch-norm statistics; from generators of their own, so that training's random stream is untouched."""
    noise = torch.Generator().manual_seed(params.seed * 1_000_003 + epoch)
    for idx in epoch_batches(
        labels, params.batch_size, STANDING_BATCHES, params.balanced, params.seed + 1, epoch
    ):
        z = torch.randn(len(idx), params.latent_dim, generator=noise)
        yield z.to(device), embeddings[idx.to(device)]
