"""BAGAN's GAN step, checked by hand on two samples: D learns real -> its class and generated -> K, and G
is trained so that D takes each generated image for the class ITS latent was drawn from."""

from __future__ import annotations

import math

import torch
from torch import nn

from cxraug.core.runtime import pick_precision
from cxraug.gans.bagan.losses import accuracy
from cxraug.gans.bagan.steps import gan_step

# two latents, classes 0 and 1 of K = 2 (D has K + 1 = 3 outputs)
LATENTS = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
CLASSES = torch.tensor([0, 1])
W = torch.tensor([[2.0, 0.0, 1.0], [0.5, -1.0, 0.0]])  # D's logits of latent i's image: row i


class Identity(nn.Module):
    """G(z) = z, so D's logits of the two generated images are the rows of W (by hand)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, z):
        return z * self.scale


def draw(n: int):
    return LATENTS[:n], CLASSES[:n]


def nets():
    discriminator = nn.Linear(2, 3, bias=False)
    discriminator.weight.data = W.T.clone()
    return Identity(), discriminator


def test_generator_loss_is_the_cross_entropy_against_each_latents_own_class():
    generator, discriminator = nets()
    frozen = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (generator, discriminator)]
    real, labels = torch.tensor([[1.0, 0.0]]), torch.tensor([1])
    out = gan_step(
        generator, discriminator, *frozen, real, labels, draw, 1, pick_precision(torch.device("cpu"), "fp32")
    )
    # G: -log softmax(W[0])[0] and -log softmax(W[1])[1], averaged
    lse0 = math.log(math.exp(2.0) + math.exp(0.0) + math.exp(1.0))
    lse1 = math.log(math.exp(0.5) + math.exp(-1.0) + math.exp(0.0))
    assert math.isclose(float(out["g_loss"]), ((lse0 - 2.0) + (lse1 + 1.0)) / 2, rel_tol=1e-6)
    # D: the real image [1, 0] against its label 1, the generated one (latent 0, logits W[0]) against 2
    assert math.isclose(float(out["d_loss"]), ((lse0 - 0.0) + (lse0 - 1.0)) / 2, rel_tol=1e-6)
    # D calls the real image class 0 (not its 1) and the generated one class 0 (not "generated")
    assert float(out["d_acc_real"]) == 0.0 and float(out["d_acc_fake"]) == 0.0


def test_accuracy_is_the_share_of_rows_whose_largest_logit_is_the_target():
    logits = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [1.0, 0.0, 0.0]])
    assert float(accuracy(logits, torch.tensor([1, 0, 2, 2]))) == 0.75
    assert float(accuracy(logits, 2)) == 0.25


def test_a_generator_step_raises_ds_belief_in_each_latents_class():
    generator, discriminator = nets()
    opt_g = torch.optim.SGD(generator.parameters(), lr=0.1)
    opt_d = torch.optim.SGD(discriminator.parameters(), lr=0.0)
    with torch.no_grad():
        before = discriminator(generator(LATENTS)).softmax(1)[torch.arange(2), CLASSES].log().sum()
    gan_step(
        generator,
        discriminator,
        opt_g,
        opt_d,
        torch.tensor([[1.0, 0.0]]),
        torch.tensor([1]),
        draw,
        1,
        pick_precision(torch.device("cpu"), "fp32"),
    )
    with torch.no_grad():
        after = discriminator(generator(LATENTS)).softmax(1)[torch.arange(2), CLASSES].log().sum()
    assert after > before
