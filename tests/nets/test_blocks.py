import pytest
import torch

from cxraug.nets.blocks import (
    ConditionalBatchNorm2d,
    discriminator_widths,
    down_block,
    generator_widths,
    init_dcgan_,
    to_image,
    up_block,
)


def test_widths_follow_dcgan_for_64_and_128_px():
    assert generator_widths(64, 64) == [512, 256, 128, 64]
    assert discriminator_widths(64, 64) == [64, 128, 256, 512]
    assert len(generator_widths(128, 32)) == 5
    with pytest.raises(ValueError):
        generator_widths(48, 64)


def test_up_and_down_blocks_double_and_halve_the_side():
    x = torch.randn(2, 8, 16, 16)
    assert up_block(8, 4)(x).shape == (2, 4, 32, 32)
    assert down_block(8, 4, spectral=True)(x).shape == (2, 4, 8, 8)
    out = to_image(8)(x)
    assert out.shape == (2, 1, 32, 32) and out.abs().max() <= 1


def test_conditional_norm_starts_as_plain_batch_norm_and_then_uses_the_condition():
    torch.manual_seed(0)
    layer = init_dcgan_(ConditionalBatchNorm2d(6, cond_dim=3))
    x, e = torch.randn(4, 6, 5, 5), torch.randn(4, 3)
    plain = torch.nn.BatchNorm2d(6, affine=False)
    assert torch.allclose(layer(x, e), plain(x), atol=1e-6)
    torch.nn.init.normal_(layer.gamma.weight)
    assert not torch.allclose(layer(x, e), layer(x, torch.randn(4, 3)))


def test_dcgan_init_statistics():
    torch.manual_seed(0)
    net = init_dcgan_(torch.nn.Sequential(up_block(256, 256), down_block(256, 256)))
    weights = net[0][0].weight
    assert abs(weights.std().item() - 0.02) < 0.002
    assert abs(net[0][1].weight.mean().item() - 1) < 0.01
