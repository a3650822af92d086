"""VGG16 for 1-channel input: VGG16's depth at any width, both heads, local ImageNet weights."""

import pytest
import torch
from torch import nn

from cxraug.classifier.predict import load_classifier, save_classifier
from cxraug.core.errors import CxraugError
from cxraug.nets.vgg import VGG16, build_vgg16, load_imagenet_features


def layers(model, kind):
    return [m for m in model.features if isinstance(m, kind)]


# VGG16's 13 conv widths (Simonyan & Zisserman, configuration D), and the same net at 1/16 width
VGG16_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
THIN_CHANNELS = [4, 4, 8, 8, 16, 16, 16, 32, 32, 32, 32, 32, 32]


@pytest.mark.parametrize(("width", "channels"), [(1.0, VGG16_CHANNELS), (1 / 16, THIN_CHANNELS)])
def test_thin_vgg_keeps_vgg16_depth(width, channels):
    model = VGG16(5, width=width)
    convs = layers(model, nn.Conv2d)
    assert len(convs) == 13 and len(layers(model, nn.MaxPool2d)) == 5
    assert [c.out_channels for c in convs] == channels
    assert convs[0].in_channels == 1


@pytest.mark.parametrize("head", ["pooled", "classic"])
@pytest.mark.parametrize("size", [32, 64])
def test_heads_give_logits_from_penultimate_features(head, size):
    model = VGG16(5, image_size=size, width=1 / 16, head=head).eval()
    x = torch.rand(3, 1, size, size) * 2 - 1
    features = model.features_of(x)
    assert features.shape == (3, model.feature_dim)
    torch.testing.assert_close(model(x), model.classifier(features))
    assert model(x).shape == (3, 5)


def test_classic_head_is_vggs_4096_wide_head_on_the_2x2_map():
    model = VGG16(5, width=1.0, head="classic")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (512 * 2 * 2, 4096),
        (4096, 4096),
        (4096, 5),
    ]


def test_bad_image_size_is_rejected():
    with pytest.raises(ValueError, match="power of two"):
        VGG16(5, image_size=48)


def torchvision_features(batch_norm):
    """A torchvision vgg16(_bn) feature extractor's state_dict, keys as in the ImageNet files."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    features = make_layers(cfgs["D"], batch_norm=batch_norm)
    if batch_norm:
        for m in features:
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return {f"features.{k}": v for k, v in features.state_dict().items()}


@pytest.mark.parametrize("batch_norm", [False, True])
def test_imagenet_weights_load_from_a_local_file(tmp_path, batch_norm):
    state = torchvision_features(batch_norm)
    state["classifier.0.weight"] = torch.zeros(4096, 25088)[:1]  # heads are ignored (shapes differ)
    path = tmp_path / "vgg16.pth"
    torch.save(state, path)
    model = build_vgg16(5, weights_path=path, norm="batch" if batch_norm else "none")
    convs = layers(model, nn.Conv2d)
    source = sorted(
        {k.rsplit(".", 1)[0] for k, v in state.items() if k.startswith("features") and v.ndim == 4},
        key=lambda p: int(p.split(".")[1]),
    )
    # the first conv sees a gray image: its weights are the RGB sum (same response to (x, x, x))
    torch.testing.assert_close(convs[0].weight, state[f"{source[0]}.weight"].sum(1, keepdim=True))
    for prefix, conv in zip(source[1:], convs[1:], strict=True):
        torch.testing.assert_close(conv.weight, state[f"{prefix}.weight"])
    if batch_norm:
        norms = layers(model, nn.BatchNorm2d)
        torch.testing.assert_close(norms[-1].running_var, state["features.41.running_var"])


def test_imagenet_weights_errors_are_one_line(tmp_path):
    with pytest.raises(CxraugError, match="not found"):
        build_vgg16(5, weights_path=tmp_path / "missing.pth")
    torch.save(torchvision_features(False), tmp_path / "plain.pth")
    with pytest.raises(CxraugError, match="width: 1"):
        build_vgg16(5, width=0.5, weights_path=tmp_path / "plain.pth")
    torch.save(torchvision_features(True), tmp_path / "bn.pth")
    with pytest.raises(CxraugError, match="norm: batch"):
        build_vgg16(5, norm="none", weights_path=tmp_path / "bn.pth")
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "resnet.pth")
    with pytest.raises(CxraugError, match="0 conv layers"):
        load_imagenet_features(VGG16(5), tmp_path / "resnet.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CxraugError, match="not a readable state_dict"):
        build_vgg16(5, weights_path=tmp_path / "junk.pth")


def test_saved_classifier_loads_back_identical(tmp_path):
    model = VGG16(3, image_size=32, width=1 / 16, head="classic").eval()
    save_classifier(model, tmp_path / "m.pt", ("a", "b", "c"), variant="baseline", seed=0)
    loaded = load_classifier(tmp_path / "m.pt")
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.classes == ("a", "b", "c") and not loaded.training
