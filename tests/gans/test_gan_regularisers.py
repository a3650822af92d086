"""What D sees (differentiable augmentation) and what G pays (mode seeking): each does what it promises."""

import pytest
import torch

from cxraug.core.config import TrainOpenganParams
from cxraug.core.runtime import pick_precision
from cxraug.gans.diffaugment import cutout, diffaugment, translate
from cxraug.gans.opengan.train import gan_step


def _images(n=64, side=16, seed=0):
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _shift(image, dy, dx):
    """image [1, S, S] shifted by (dy, dx) with its edges replicated: what translate promises."""
    side = image.shape[-1]
    rows = (torch.arange(side) - dy).clamp(0, side - 1)
    cols = (torch.arange(side) - dx).clamp(0, side - 1)
    return image[:, rows][:, :, cols]


def test_translation_shifts_each_image_by_its_own_offset_within_an_eighth_of_the_side():
    x = _images().requires_grad_()
    torch.manual_seed(0)
    out = translate(x)
    offsets = []
    for image, moved in zip(x.detach(), out.detach(), strict=True):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.equal(_shift(image, dy, dx), moved)
        ]
        assert len(found) == 1  # a shift of at most 16 / 8 = 2 px, and exactly one explains the output
        offsets.append(found[0])
    assert len(set(offsets)) > 10  # each image draws its own
    out.sum().backward()  # every output pixel is one input pixel: gradients reach the image
    assert torch.equal(x.grad.sum((1, 2, 3)), torch.full((64,), 256.0))


def test_cutout_zeroes_one_square_of_half_the_side_and_leaves_the_rest():
    x = _images() + 3  # no pixel is 0 before
    torch.manual_seed(1)
    out = cutout(x)
    for image, cut in zip(x, out, strict=True):
        zero = cut[0] == 0
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert 1 <= len(rows) <= 8 and 1 <= len(cols) <= 8  # clipped where it overhangs an edge
        box = torch.zeros_like(zero)
        box[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
        assert torch.equal(zero, box)  # one solid square (or its part inside the image)
        assert torch.equal(cut[0][~zero], image[0][~zero])
    assert (out == 0).flatten(1).sum(1).float().mean() > 40  # most squares lie inside: ~8 x 8 = 64


def test_no_policy_is_the_identity_and_an_unknown_one_is_refused():
    x = _images()
    assert diffaugment(x, []) is x
    with pytest.raises(ValueError, match="flip"):
        diffaugment(x, ["flip"])


@pytest.mark.parametrize("augment", [[], ["translation"]])
def test_d_sees_augmented_real_and_fake_images_in_both_updates_when_asked(augment):
    """gan_step with a recording D: without augment D gets the images themselves in all three passes;
    with it, shifted copies in each, and G's update still gets a gradient through them."""
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x, e):
            seen.append(x.detach().clone())
            return (x.mean((1, 2, 3)) * self.w)[:, None]

    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = torch.nn.Parameter(torch.linspace(-1, 1, 256).view(1, 1, 16, 16))  # shifts show

        def forward(self, z, e):
            return torch.tanh(z[:, :1, None, None].expand(-1, 1, 16, 16) + self.b)

    params = TrainOpenganParams(augment=augment, consistency_weight=0, precision="fp32", device="cpu")
    g, d = Shift(), Recorder()
    opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=0.1), torch.optim.SGD(d.parameters(), lr=0.1)
    real, e, z = _images(8), torch.zeros(8, 4), torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    fake = g(z, e).detach()  # what G draws in the step (its weights change only after D's three passes)
    cpu = pick_precision(torch.device("cpu"), "fp32")
    torch.manual_seed(0)
    gan_step(g, d, None, opt_g, opt_d, real, e, z, params, cpu)
    assert len(seen) == 3  # D on the reals, on the fakes, then inside G's loss
    for view, image in zip(seen, (real, fake, fake), strict=True):
        assert torch.equal(view, image) is not bool(augment)
    assert g.b.grad.abs().sum() > 0  # G's loss reaches G through the transform


def test_mode_seeking_draws_half_the_batch_again_for_the_same_e_and_moves_the_pairs_apart():
    """train_opengan.mode_seeking_weight > 0: G is called once on [z, z'] with [e, e[:half]], and with D
    and consistency silent (D scores every image 0), G's update only raises how far apart two z's of one
    e land: the slope of G's output in z grows."""
    calls = []

    class Slope(torch.nn.Module):  # G(z, e) = s * z[:, :1] everywhere, plus e's first entry
        def __init__(self):
            super().__init__()
            self.s = torch.nn.Parameter(torch.tensor(0.1))

        def forward(self, z, e):
            calls.append((z.detach().clone(), e.detach().clone()))
            return (self.s * z[:, :1] + e[:, :1])[:, :, None, None].expand(-1, 1, 16, 16)

    class Silent(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, e):
            return (x.mean((1, 2, 3)) * self.w)[:, None]  # 0, and no gradient to the images while w = 0

    params = TrainOpenganParams(mode_seeking_weight=1.0, consistency_weight=0, precision="fp32", device="cpu")
    g, d = Slope(), Silent()
    opt_g, opt_d = torch.optim.SGD(g.parameters(), lr=0.01), torch.optim.SGD(d.parameters(), lr=0.0)
    e, z = torch.randn(8, 4), torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    cpu = pick_precision(torch.device("cpu"), "fp32")
    logged = gan_step(g, d, None, opt_g, opt_d, _images(8), e, z, params, cpu)
    ((z_all, e_all),) = calls
    assert torch.equal(z_all[:8], z) and torch.equal(e_all[:8], e) and len(z_all) == 12
    assert torch.equal(e_all[8:], e[:4]) and not torch.equal(z_all[8:], z[:4])  # a second z for one e
    assert g.s.item() > 0.1  # apart: the slope grew
    a, b = 0.1 * z_all[:4, 0] + e[:4, 0], 0.1 * z_all[8:, 0] + e[:4, 0]  # the pairs G drew, slope 0.1
    expected = 1 / ((a - b).abs().mean() / (z_all[:4] - z_all[8:]).abs().mean() + 1e-5)
    assert logged["mode_seeking"].item() == pytest.approx(expected.item(), rel=1e-5)  # gan/mode_seeking
    gan_step(g, d, None, opt_g, opt_d, _images(8), e, z, params, cpu, update_g=False)
    assert len(calls[-1][0]) == 8  # a D-only step draws no pairs
