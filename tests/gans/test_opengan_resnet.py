"""NewGAN as published: the residual generator's conditional norm, self-attention and spectral norm, the
discriminator's optional projection, the consistency terms, the reference defaults, unfiltered sampling."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.nn.utils import parametrize

from cxraug.core.config import SynthesizeParams, TrainOpenganParams, load_params
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import pick_precision
from cxraug.core.training import adam
from cxraug.gans.opengan.architectures import build_nets, rebuild, saved_state
from cxraug.gans.opengan.losses import consistency_loss, consistency_term
from cxraug.gans.opengan.nets import ConditionalBatchNorm2d, Generator
from cxraug.gans.opengan.proposer import MODEL_FILE, load_proposer, save_model
from cxraug.gans.opengan.resnet import ConvDiscriminator, ResidualGenerator, SelfAttention
from cxraug.gans.opengan.train import gan_step
from cxraug.synthesis.draw import synthesize
from cxraug.synthesis.filters import FilterRule, filter_rule

REPO = Path(__file__).resolve().parents[2]


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


def conditional_norms(module):
    return [m for m in module.modules() if isinstance(m, ConditionalBatchNorm2d)]


class PixelEmbedder(torch.nn.Module):
    """A stand-in frozen metric network: a fixed random projection of the pixels onto the unit sphere."""

    embed_dim = 6

    def __init__(self, size: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(size * size, self.embed_dim).requires_grad_(False)

    def forward(self, x):
        return F.normalize(self.proj(x.flatten(1)), dim=1)


def test_conditional_norm_is_plain_batch_norm_at_init_and_follows_e_once_its_maps_are_nonzero():
    torch.manual_seed(0)
    norm = ConditionalBatchNorm2d(4, 6)
    x, e1, e2 = torch.randn(8, 4, 5, 5), unit(8, 6, 1), unit(8, 6, 2)
    plain = F.batch_norm(x, None, None, training=True, eps=norm.norm.eps)
    assert torch.allclose(norm(x, e1), plain, atol=1e-5) and torch.allclose(norm(x, e2), plain, atol=1e-5)
    torch.nn.init.normal_(norm.gamma.weight, std=0.5)
    torch.nn.init.normal_(norm.beta.weight, std=0.5)
    out = norm(x, e1)
    expected = (
        plain * (1 + e1 @ norm.gamma.weight.T)[:, :, None, None] + (e1 @ norm.beta.weight.T)[:, :, None, None]
    )
    assert torch.allclose(out, expected, atol=1e-5) and not torch.allclose(out, norm(x, e2), atol=1e-3)


def test_residual_generator_ignores_e_at_init_and_each_blocks_norm_alone_makes_it_follow_e():
    torch.manual_seed(0)
    g = ResidualGenerator(32, latent_dim=8, embed_dim=6, g_base=8)
    z, e1, e2 = torch.randn(4, 8), unit(4, 6, 1), unit(4, 6, 2)
    g(z, e1)  # one train-mode pass: BN statistics and spectral norm's power iteration; eval mode keeps them
    g.eval()
    assert torch.allclose(g(z, e1), g(z, e2), atol=1e-6)  # zero maps: every norm is plain BN
    norms = conditional_norms(g)
    assert len(norms) == 2 * len(g.blocks) + 1 == 7  # two per block and the last one
    assert not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine for m in g.modules())
    for norm in norms:
        torch.nn.init.normal_(norm.gamma.weight, std=0.5)
        torch.nn.init.normal_(norm.beta.weight, std=0.5)
        assert not torch.allclose(g(z, e1), g(z, e2), atol=1e-4)
        torch.nn.init.zeros_(norm.gamma.weight)
        torch.nn.init.zeros_(norm.beta.weight)


@pytest.mark.parametrize("size", [32, 64, 128])
def test_residual_generator_draws_images_in_range_at_every_power_of_two(size):
    torch.manual_seed(0)
    g = ResidualGenerator(size, latent_dim=8, embed_dim=6, g_base=4)
    images = g(torch.randn(3, 8), unit(3, 6, 0))
    assert images.shape == (3, 1, size, size) and images.abs().max() <= 1 and images.std() > 0
    assert g.config["attention_size"] == size // 4
    sides = []
    g.attention.register_forward_hook(lambda m, i, o: sides.append(o.shape[-1]))
    g(torch.randn(2, 8), unit(2, 6, 0))
    assert sides == [size // 4]  # one attention block, at mid resolution
    with pytest.raises(ValueError, match="power of two"):
        ResidualGenerator(48, 8, 6, 4)


def test_every_conv_and_linear_layer_of_g_and_d_is_spectrally_normalised():
    g, d = build_nets(TrainOpenganParams(g_base=4, d_base=4, latent_dim=8), 32, 6)
    maps = {id(m) for n in conditional_norms(g) for m in (n.gamma, n.beta)}  # linear maps of e, not layers
    layers = [m for net in (g, d) for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    layers = [m for m in layers if id(m) not in maps]
    assert sum(isinstance(m, torch.nn.Conv2d) for m in layers) >= 3 * len(g.blocks) + 4 + len(d.features) - 1
    assert all(parametrize.is_parametrized(m, "weight") for m in layers)


def test_self_attention_starts_as_the_identity_and_its_gain_moves_in_training():
    torch.manual_seed(0)
    block = SelfAttention(16)
    x = torch.randn(2, 16, 8, 8)
    assert block.gain.item() == 0 and torch.equal(block(x), x)
    p = TrainOpenganParams(latent_dim=8, g_base=8, d_base=8, precision="fp32")
    g, d = build_nets(p, 32, PixelEmbedder.embed_dim)
    embedder, cpu = PixelEmbedder(32), torch.device("cpu")
    opt_g, opt_d = adam(g.parameters(), cpu, p.lr_g, (p.beta1, p.beta2)), adam(d.parameters(), cpu, p.lr_d)
    real, e = torch.rand(8, 1, 32, 32) * 2 - 1, unit(8, 6, 3)
    for _ in range(3):
        gan_step(g, d, embedder, opt_g, opt_d, real, e, torch.randn(8, 8), p, pick_precision(cpu, "fp32"))
    assert g.attention.gain.abs().item() > 1e-5  # Adam's steps on the hinge + consistency loss moved it
    h = torch.randn(2, g.blocks[g.attention_after].conv2.out_channels, 8, 8)
    assert not torch.allclose(g.attention(h), h)


@pytest.mark.parametrize("projection", [True, False])
def test_discriminator_projection_term_is_optional(projection):
    torch.manual_seed(0)
    d = ConvDiscriminator(32, embed_dim=6, d_base=8, projection=projection).eval()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    own, other = d(x, unit(4, 6, 1)), d(x, unit(4, 6, 2))
    assert own.shape == (4,)
    assert torch.allclose(own, other) is not projection  # only the projection term reads e
    assert hasattr(d, "projection") is projection


def test_consistency_terms_match_a_hand_computation_on_two_samples():
    embedded = torch.tensor([[1.0, 0, 0, 0], [0, 0.6, 0.8, 0]])
    e = torch.tensor([[0.0, 1, 0, 0], [0, 0.8, 0.6, 0]])
    # mse: mean of the 8 squared differences: (1 + 1) + (0.04 + 0.04) = 2.08 -> 0.26
    assert consistency_term(embedded, e, "mse").item() == pytest.approx(0.26)
    # cosine: 1 - mean(0, 0.48 + 0.48) = 0.52
    assert consistency_term(embedded, e, "cosine").item() == pytest.approx(0.52)
    images = torch.rand(2, 1, 4, 4, requires_grad=True)
    loss = consistency_loss(lambda x: F.normalize(x.flatten(1)[:, :4], dim=1), images, e, "mse")
    loss.backward()
    assert images.grad[:, :, 0].abs().sum() > 0 and images.grad[:, :, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="consistency"):
        consistency_term(embedded, e, "l1")


def test_defaults_are_the_references_and_params_yaml_says_the_same():
    p = TrainOpenganParams()
    assert (p.generator, p.consistency, p.consistency_weight) == ("residual", "mse", 0.01)
    assert (p.lr_g, p.lr_d, p.beta1, p.beta2, p.loss) == (1e-4, 1e-4, 0.0, 0.999, "hinge")
    assert load_params(REPO / "params.yaml").train_opengan == p
    demo = yaml.safe_load((REPO / "params.demo.yaml").read_text())["train_opengan"]
    assert demo["epochs"] * demo["steps_per_epoch"] <= 150  # the demo stays minutes on 2 cores


def test_a_saved_net_names_its_architecture_and_is_rebuilt_from_it_files_without_a_name_are_dcgan():
    torch.manual_seed(0)
    for generator in ("residual", "dcgan"):
        p = TrainOpenganParams(generator=generator, latent_dim=8, g_base=4, d_base=4)
        g, d = build_nets(p, 32, 6)
        z, e = torch.randn(2, 8), unit(2, 6, 0)
        for net, role in ((g, "generator"), (d, "discriminator")):
            saved = saved_state(net)
            again = rebuild(saved, role)
            assert type(again) is type(net)
            assert saved["arch"] == {"generator": generator, "discriminator": "conv"}[role]
        assert torch.equal(rebuild(saved_state(g), "generator").eval()(z, e), g.eval()(z, e))
    legacy = saved_state(Generator(32, 8, 6, 4))
    del legacy["arch"]
    assert type(rebuild(legacy, "generator")) is Generator


class LowScores:
    """Candidates whose scores are all below any sensible threshold."""

    classes = ("a", "b")

    def propose(self, class_index, n, generator):
        return torch.full((n, 4, 4), class_index, dtype=torch.uint8), torch.full((n,), 0.01)


def test_opengan_is_sampled_unfiltered_by_default_bagan_keeps_its_own_rule():
    f = SynthesizeParams().filter
    opengan, bagan = filter_rule(f, "opengan"), filter_rule(f, "bagan")
    assert opengan.mode == "none" and bagan.mode == "argmax"
    assert filter_rule(f, "unlisted") == FilterRule("threshold", f.threshold)  # unlisted: threshold 0.5
    kept = synthesize(LowScores(), 5, opengan, 2, 4, torch.Generator().manual_seed(0))
    assert [(d.accepted, d.tried) for d in kept] == [(5, 5), (5, 5)]  # a batch of 4, then the 1 wanted
    assert all(d.accepted == 0 for d in synthesize(LowScores(), 5, 0.5, 2, 4, torch.Generator()))
    thresholded = SynthesizeParams(filter={"per_gan": {"opengan": {"mode": "threshold"}}}).filter
    assert filter_rule(thresholded, "opengan") == FilterRule("threshold", 0.5)


def test_a_model_file_from_before_the_g_base_rename_is_a_one_line_error_naming_it(tmp_path):
    """Files whose generator config says base_width (renamed g_base) once died in the constructor with
    a raw TypeError; now: which file, and retrain."""
    g, d = build_nets(TrainOpenganParams(latent_dim=8, g_base=4, d_base=4), 32, 6)
    save_model(tmp_path, g, d, ("a", "b"), ["a", "b"], [unit(3, 6, 0), unit(3, 6, 1)], "exemplars", 0.1)
    state = torch.load(tmp_path / MODEL_FILE, weights_only=False)
    config = state["generator"]["config"]
    config["base_width"] = config.pop("g_base")
    torch.save(state, tmp_path / MODEL_FILE)
    with pytest.raises(CxraugError, match=r"opengan\.pt: .*base_width.*retrain") as caught:
        load_proposer(tmp_path, torch.device("cpu"))
    assert "\n" not in str(caught.value)
