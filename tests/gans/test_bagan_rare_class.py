"""BAGAN's small-class choices (the covariance estimators, the class-weighted discriminator loss) and the
encoder's init that makes its autoencoder converge at every seed."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.covariance import OAS, LedoitWolf

from cxraug.core.errors import CxraugError
from cxraug.gans.bagan.latent import class_covariance, fit_class_gaussians
from cxraug.gans.bagan.losses import balanced_class_weights, discriminator_loss
from cxraug.gans.bagan.nets import Architecture, ConvNet, encoder


def test_shrinkage_estimates_are_sklearns_and_closer_to_the_truth_for_few_codes():
    """30 codes in 100 dimensions (the rare class's situation): Ledoit-Wolf and OAS equal sklearn's fits
    and, averaged over draws, err less (Frobenius) than the sample covariance."""
    rng = np.random.default_rng(0)
    d, n = 100, 30
    true = np.diag(np.linspace(0.2, 2.0, d))
    errors = {e: [] for e in ("sample", "ledoit_wolf", "oas", "diagonal")}
    for _ in range(20):
        codes = rng.multivariate_normal(np.zeros(d), true, size=n)
        for e in errors:
            errors[e].append(np.linalg.norm(class_covariance(codes, e) - true))
    assert np.allclose(class_covariance(codes, "oas"), OAS().fit(codes).covariance_)
    assert np.allclose(class_covariance(codes, "ledoit_wolf"), LedoitWolf().fit(codes).covariance_)
    assert np.allclose(np.diag(class_covariance(codes, "diagonal")), codes.var(0, ddof=1))
    mean = {e: np.mean(v) for e, v in errors.items()}
    assert mean["ledoit_wolf"] < 0.6 * mean["sample"] and mean["oas"] < 0.6 * mean["sample"]
    with pytest.raises(CxraugError, match="unknown covariance estimator"):
        class_covariance(codes, "nope")


def test_every_estimator_gives_positive_definite_class_gaussians():
    rng = np.random.default_rng(1)
    latents, labels = rng.normal(size=(40, 16)), np.repeat([0, 1], [35, 5])
    for estimator in ("sample", "ledoit_wolf", "oas", "diagonal"):
        g = fit_class_gaussians(latents, labels, ("a", "b"), 1e-3, estimator)
        assert np.allclose(g.means[1], latents[35:].mean(0))
        assert all(np.linalg.eigvalsh(c).min() > 0 for c in g.covariances)


def test_balanced_weights_make_each_real_class_weigh_as_an_average_one():
    counts = torch.tensor([120, 120, 30])
    w = balanced_class_weights(counts)
    assert torch.allclose(w, torch.tensor([0.75, 0.75, 3.0, 1.0]))
    logits_real, labels = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    logits_fake = torch.randn(2, 4)
    targets = torch.cat([labels, torch.tensor([3, 3])])
    per_image = F.cross_entropy(torch.cat([logits_real, logits_fake]), targets, reduction="none")
    expected = (w[targets] * per_image).mean()  # a mean over images: shards add up (torchrun)
    assert torch.allclose(discriminator_loss(logits_real, labels, logits_fake, w), expected)
    # unweighted is BAGAN's plain mean
    assert torch.allclose(discriminator_loss(logits_real, labels, logits_fake), per_image.mean())


def test_the_encoder_starts_with_codes_that_carry_its_input():
    """At 64 px, width 16 (the digits gate's nets), DCGAN's N(0, 0.02) init on this batch-norm-free trunk
    shrinks the signal ~1000x (codes of std 7e-4: the decoder cannot see its input, and at seed 1 the
    autoencoder stalled at validation MSE 0.10). The encoder's He init keeps the codes' scale and their
    differences between images."""
    torch.manual_seed(0)
    arch = Architecture(64, 100, 16, 16, 0.3, 5)
    images = torch.rand(64, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        he = encoder(arch).eval()(images)
        dcgan = ConvNet(arch, arch.latent_dim).eval()(images)  # the trunk's DCGAN init: the planted bug
    assert 0.3 < he.std().item() < 3
    assert he.std(0).mean().item() > 0.01 * he.std().item()  # codes differ from image to image
    assert dcgan.std().item() < 0.01
