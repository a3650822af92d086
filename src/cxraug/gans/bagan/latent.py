"""BAGAN's class-conditional latent space: one multivariate Gaussian per class, fitted to the encoder's codes
of that class's training images, and the class mix that generated images are drawn with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_savez


@dataclass(frozen=True)
class ClassGaussians:
    classes: tuple[str, ...]
    means: np.ndarray  # float64 [K, d]
    covariances: np.ndarray  # float64 [K, d, d]: sample covariance + ridges[c] * I
    counts: np.ndarray  # int64 [K]: training images each Gaussian was fitted to
    ridges: np.ndarray  # float64 [K]: what was added to each covariance's diagonal

    @property
    def latent_dim(self) -> int:
        return int(self.means.shape[1])

    def save(self, path: Path) -> Path:
        return atomic_savez(
            path,
            classes=np.array(self.classes, dtype=str),
            means=self.means,
            covariances=self.covariances,
            counts=self.counts,
            ridges=self.ridges,
        )

    @classmethod
    def load(cls, path: Path) -> ClassGaussians:
        if not Path(path).is_file():
            raise CxraugError(f"{path}: not found; run `cxraug train-bagan` (dvc repro train_bagan) first")
        with np.load(path, allow_pickle=False) as npz:
            return cls(
                tuple(str(c) for c in npz["classes"]),
                npz["means"],
                npz["covariances"],
                npz["counts"],
                npz["ridges"],
            )


COVARIANCE_ESTIMATORS = ("sample", "ledoit_wolf", "oas", "diagonal")


def class_covariance(codes: np.ndarray, estimator: str) -> np.ndarray:
    """One class's covariance from its codes [n, d]. 'sample': numpy's unbiased estimate (singular when
    n <= d); 'ledoit_wolf' / 'oas': sklearn.covariance's shrinkage towards a scaled identity, with the
    shrinkage chosen from the data (strong for few codes in many dimensions); 'diagonal': per-dimension
    unbiased variances only."""
    if estimator == "sample":
        return np.cov(codes, rowvar=False)
    if estimator == "diagonal":
        return np.diag(codes.var(axis=0, ddof=1))
    from sklearn.covariance import OAS, LedoitWolf

    model = {"ledoit_wolf": LedoitWolf, "oas": OAS}.get(estimator)
    if model is None:
        raise CxraugError(f"unknown covariance estimator {estimator!r}; one of {COVARIANCE_ESTIMATORS}")
    return model(assume_centered=False).fit(codes).covariance_


def fit_class_gaussians(
    latents: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    ridge: float,
    estimator: str = "sample",
) -> ClassGaussians:
    """Mean and covariance (see class_covariance) of each class's codes. A class with fewer images than
    latent dimensions has a singular sample covariance, so `ridge` times its mean variance is added to
    the diagonal: the result is positive definite and the Gaussian stays where the data is."""
    latents = np.asarray(latents, dtype=np.float64)
    labels = np.asarray(labels)
    means, covariances, counts, ridges = [], [], [], []
    for c, name in enumerate(classes):
        codes = latents[labels == c]
        if len(codes) < 2:
            raise CxraugError(
                f"class '{name}' has {len(codes)} training image(s); BAGAN needs at least 2 per class to fit "
                "its latent Gaussian (add images or remove the class from prepare.classes)"
            )
        cov = class_covariance(codes, estimator)
        added = ridge * max(float(np.trace(cov)) / cov.shape[0], 1e-8)
        means.append(codes.mean(axis=0))
        covariances.append(cov + added * np.eye(cov.shape[0]))
        counts.append(len(codes))
        ridges.append(added)
    return ClassGaussians(
        tuple(classes), np.stack(means), np.stack(covariances), np.array(counts), np.array(ridges)
    )


class LatentSampler:
    """z ~ N(mu_c, Sigma_c) for a batch of classes: z = mu_c + L_c eps with Sigma_c = L_c L_c^T, eps drawn
    from the caller's generator (so a resumed run draws the same latents)."""

    def __init__(self, gaussians: ClassGaussians, device: torch.device) -> None:
        self.device = device
        self.means = torch.from_numpy(gaussians.means).float().to(device)
        self.factors = torch.linalg.cholesky(torch.from_numpy(gaussians.covariances)).float().to(device)

    def __call__(self, classes: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(len(classes), self.means.shape[1], generator=generator).to(self.device)
        c = classes.to(self.device)
        return self.means[c] + torch.einsum("nij,nj->ni", self.factors[c], eps)


def class_probabilities(counts: torch.Tensor, mode: str) -> torch.Tensor:
    """How often each class is generated. 'uniform': 1/K. 'rebalance' (BAGAN's code): max(2/K - share_c, 0),
    renormalised, so that the real images (at their shares) plus as many generated ones are balanced."""
    k = len(counts)
    if mode == "uniform":
        return torch.full((k,), 1.0 / k)
    if mode == "rebalance":
        share = counts.double() / counts.sum()
        p = (2.0 / k - share).clamp(min=0)
        return (p / p.sum()).float()
    raise ValueError(f"unknown class sampling {mode!r}")
