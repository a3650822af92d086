"""The diffusion model's learning-rate schedule and prediction target (what docs/diffusion.md's digits
table varies): numbers checked against independent formulas."""

from __future__ import annotations

import math

import pytest
import torch

from cxraug.core.config import TrainDiffusionParams
from cxraug.gans.diffusion.nets import (
    Architecture,
    sample,
    sampling_scheduler,
    train_scheduler,
    training_target,
)
from cxraug.gans.diffusion.train import lr_at

ARCH = {
    "image_size": 16,
    "resolution": 8,
    "n_classes": 2,
    "widths": [8, 16],
    "layers_per_block": 1,
    "attention": False,
    "train_timesteps": 100,
    "beta_schedule": "squaredcos_cap_v2",
}


def test_cosine_lr_warms_up_linearly_then_decays_to_zero_at_the_last_step():
    p = TrainDiffusionParams(lr=1e-3, warmup_steps=10, lr_schedule="cosine")
    total = 110
    assert lr_at(p, 4, total) == pytest.approx(5e-4)  # warm-up: (4 + 1) / 10 of lr
    assert lr_at(p, 9, total) == pytest.approx(1e-3)  # the peak, at the warm-up's last step
    assert lr_at(p, 10, total) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 100)))
    assert lr_at(p, 59, total) == pytest.approx(5e-4)  # half-way through the decay: half the lr
    assert lr_at(p, total - 1, total) == pytest.approx(0.0, abs=1e-12)
    decay = [lr_at(p, s, total) for s in range(10, total)]
    assert all(a > b for a, b in zip(decay, decay[1:], strict=False))


def test_constant_lr_keeps_the_peak_after_the_warm_up():
    p = TrainDiffusionParams(lr=1e-3, warmup_steps=10)
    assert p.lr_schedule == "constant"
    assert [lr_at(p, s, 100) for s in (0, 9, 50, 99)] == pytest.approx([1e-4, 1e-3, 1e-3, 1e-3])


def test_v_target_is_sqrt_abar_noise_minus_sqrt_one_minus_abar_x0():
    arch = Architecture.from_dict({**ARCH, "prediction_type": "v_prediction"})
    schedule = train_scheduler(arch)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1, torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 30, 70, 99])
    # the cosine schedule's alpha-bar, from its formula (beta capped at 0.999) rather than the scheduler
    f = [math.cos((s / 100 + 0.008) / 1.008 * math.pi / 2) ** 2 for s in range(101)]
    abar = torch.tensor([math.prod(1 - min(1 - f[i + 1] / f[i], 0.999) for i in range(k + 1)) for k in t])
    a = abar.view(-1, 1, 1, 1).float()
    expected = a.sqrt() * noise - (1 - a).sqrt() * x0
    torch.testing.assert_close(training_target(schedule, x0, noise, t), expected, atol=1e-5, rtol=1e-4)
    eps_arch = Architecture.from_dict(ARCH)
    assert training_target(train_scheduler(eps_arch), x0, noise, t) is noise


def test_a_model_saved_before_the_prediction_type_existed_loads_as_epsilon_and_samplers_follow_the_type():
    assert Architecture.from_dict(ARCH).prediction_type == "epsilon"
    v = Architecture.from_dict({**ARCH, "prediction_type": "v_prediction"})
    for name in ("ddim", "dpm_solver"):
        assert sampling_scheduler(v, name).config.prediction_type == "v_prediction"


def test_a_v_prediction_model_that_predicts_v_exactly_recovers_the_image():
    """A 'network' that returns the true v for a fixed target image: DDIM must land on that image,
    which it does only if the sampler reads the output as v (as epsilon it would not)."""
    arch = Architecture.from_dict({**ARCH, "prediction_type": "v_prediction", "image_size": 8})
    abar = train_scheduler(arch).alphas_cumprod
    target = torch.linspace(-0.8, 0.8, 64).view(1, 1, 8, 8)

    class Oracle(torch.nn.Module):
        def forward(self, x, t, class_labels=None):
            a = abar[t].view(-1, 1, 1, 1)
            noise = (x - a.sqrt() * target) / (1 - a).sqrt()
            return type("Out", (), {"sample": a.sqrt() * noise - (1 - a).sqrt() * target})()

    out = sample(Oracle(), arch, torch.tensor([0]), torch.randn(1, 1, 8, 8), "ddim", 10, 1.0)
    torch.testing.assert_close(out, target, atol=1e-3, rtol=0)
