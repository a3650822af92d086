"""OpenGAN's adversarial losses by hand on two samples, and the candidate score synthesize thresholds:
realness sigmoid(D(x, e)) times the embedder's prototype agreement, recomputed from the drawn images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cxraug.core.errors import CxraugError
from cxraug.gans import registry
from cxraug.gans.opengan.conditioning import ExemplarConditioning
from cxraug.gans.opengan.proposer import OpenganProposer

try:  # the losses' module since issue 14; nets.py before
    from cxraug.gans.opengan.losses import discriminator_loss, generator_loss
except ImportError:
    from cxraug.gans.opengan.nets import discriminator_loss, generator_loss

REAL, FAKE = torch.tensor([0.5, 2.0]), torch.tensor([-0.25, 1.5])


def test_hinge_losses_by_hand():
    # D: mean(max(0, 1 - real)) + mean(max(0, 1 + fake)) = (0.5 + 0) / 2 + (0.75 + 2.5) / 2
    assert float(discriminator_loss(REAL, FAKE, "hinge")) == pytest.approx(0.25 + 1.625)
    assert float(generator_loss(FAKE, "hinge")) == pytest.approx(-(-0.25 + 1.5) / 2)
    # D's gradient pushes fakes' scores DOWN and (within the margin) reals' UP
    real, fake = REAL.clone().requires_grad_(), FAKE.clone().requires_grad_()
    discriminator_loss(real, fake, "hinge").backward()
    assert fake.grad.tolist() == [0.5, 0.5] and real.grad.tolist() == [-0.5, 0.0]


def test_nonsaturating_losses_by_hand():
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731
    d = (sp(-0.5) + sp(-2.0)) / 2 + (sp(-0.25) + sp(1.5)) / 2
    assert float(discriminator_loss(REAL, FAKE, "nonsaturating")) == pytest.approx(d)
    assert float(generator_loss(FAKE, "nonsaturating")) == pytest.approx((sp(0.25) + sp(-1.5)) / 2)


class StubGenerator(nn.Module):
    latent_dim = 3

    def __init__(self) -> None:
        super().__init__()
        self.z, self.e = nn.Linear(3, 64), nn.Linear(4, 64)

    def forward(self, z, e):
        return torch.tanh(self.z(z) + self.e(e)).view(-1, 1, 8, 8)


class StubDiscriminator(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.x, self.e = nn.Linear(64, 4), nn.Linear(4, 4)

    def forward(self, x, e):
        return (self.x(x.flatten(1)) * self.e(e)).sum(1)


class StubEmbedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.x = nn.Linear(64, 4)

    def forward(self, x):
        return F.normalize(self.x(x.flatten(1)), dim=1)


def test_candidate_score_is_realness_times_prototype_agreement():
    torch.manual_seed(0)
    g, d, f = StubGenerator(), StubDiscriminator(), StubEmbedder()
    banks = [F.normalize(torch.randn(5, 4), dim=1) for _ in range(3)]
    prototypes = torch.stack([F.normalize(b.mean(0), dim=0) for b in banks])
    proposer = OpenganProposer(
        classes=("A", "B", "C"),
        generator=g,
        discriminator=d,
        embedder=f,
        conditionings=[ExemplarConditioning(b) for b in banks],
        prototypes=prototypes,
        targets=[0, 1, 2],
        temperature=0.2,
    )
    assert isinstance(proposer, registry.Proposer)  # what synthesize relies on, on the real class
    images, scores = proposer.propose(1, 6, torch.Generator().manual_seed(4))
    assert images.dtype == torch.uint8 and images.shape == (6, 8, 8)

    rng = torch.Generator().manual_seed(4)  # replay the draws: e from class 1's bank, then z
    e = banks[1][torch.randint(5, (6,), generator=rng)]
    z = torch.randn(6, 3, generator=rng)
    with torch.no_grad():
        x = g(z, e)
        realness = torch.sigmoid(d(x, e))
        cos = F.cosine_similarity(f(x)[:, None], prototypes[None], dim=-1)
        agreement = (cos / 0.2).softmax(1)[:, 1]
    torch.testing.assert_close(scores, realness * agreement)
    assert not torch.allclose(realness, torch.ones(6), atol=0.05)  # the factor matters on this fixture


def _proposer(targets=(0, 1, 2), classes=("A", "B", "C"), batch_size=256):
    torch.manual_seed(0)
    banks = [F.normalize(torch.randn(5, 4), dim=1) for _ in range(3)]
    prototypes = torch.stack([F.normalize(b.mean(0), dim=0) for b in banks])
    proposer = OpenganProposer(
        classes=classes,
        generator=StubGenerator(),
        discriminator=StubDiscriminator(),
        embedder=StubEmbedder(),
        conditionings=[ExemplarConditioning(banks[t]) for t in targets],
        prototypes=prototypes,
        targets=list(targets),
        temperature=0.2,
        batch_size=batch_size,
    )
    return proposer, banks, prototypes


def test_batched_draws_are_the_concatenated_batches_and_the_last_is_shortened():
    proposer, banks, prototypes = _proposer(batch_size=4)
    images, scores = proposer.propose(0, 10, torch.Generator().manual_seed(2))
    rng, xs, expected = torch.Generator().manual_seed(2), [], []
    for m in (4, 4, 2):  # per batch: e from class 0's bank, then z
        e = banks[0][torch.randint(5, (m,), generator=rng)]
        z = torch.randn(m, 3, generator=rng)
        with torch.no_grad():
            x = proposer.generator(z, e)
            cos = F.cosine_similarity(proposer.embedder(x)[:, None], prototypes[None], dim=-1)
            expected.append(torch.sigmoid(proposer.discriminator(x, e)) * (cos / 0.2).softmax(1)[:, 0])
        xs.append(x)
    torch.testing.assert_close(scores, torch.cat(expected))
    pixels = torch.cat(xs)[:, 0].add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)  # [-1, 1] -> uint8
    assert torch.equal(images, pixels)
    assert not scores.requires_grad


def test_judge_says_whether_the_nearest_prototype_is_the_target():
    # an exemplar-style proposer: its one class is prototype 2 of 3, so judge must look at column 2
    proposer, banks, prototypes = _proposer(targets=(2,), classes=("new",))
    x = torch.tanh(torch.randn(40, 1, 8, 8, generator=torch.Generator().manual_seed(5)))
    e = banks[2][torch.arange(40) % 5]
    realness, agreement, nearest = proposer.judge(x, e, 0)
    with torch.no_grad():
        cos = F.cosine_similarity(proposer.embedder(x)[:, None], prototypes[None], dim=-1)
        torch.testing.assert_close(realness, torch.sigmoid(proposer.discriminator(x, e)))
    torch.testing.assert_close(agreement, (cos / 0.2).softmax(1)[:, 2])
    assert torch.equal(nearest, cos.argmax(1) == 2)
    assert 0 < int(nearest.sum()) < 40  # both answers occur on this fixture


def test_class_indices_are_checked_and_zero_draws_give_empty_batches():
    proposer, _, _ = _proposer()
    assert len(proposer.propose(0, 3, torch.Generator().manual_seed(0))[1]) == 3  # the first class works
    for bad in (-1, 3):
        with pytest.raises(
            CxraugError, match=rf"class index {bad} out of range for classes \['A', 'B', 'C'\]"
        ):
            proposer.propose(bad, 2, torch.Generator())
    images, scores = proposer.propose(1, 0, torch.Generator())
    assert images.dtype == torch.uint8 and images.ndim == 3 and len(images) == 0  # what synthesize checks
    assert scores.shape == (0,) and scores.dtype == torch.float32
