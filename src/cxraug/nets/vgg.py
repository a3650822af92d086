"""VGG16 for one-channel 64 px chest X-rays.

The feature extractor is VGG16's: 13 3x3 convolutions in five blocks (64, 64 | 128, 128 | 256 x3 |
512 x3 | 512 x3 channels), each block closed by a 2x2 max-pool, so a 64 px image leaves it as a 2x2 map
(a 224 px one as 7x7). The ImageNet head (flatten 7x7x512 -> 4096 -> 4096 -> 1000) does not fit that map,
so the head is adapted:

- ``head="pooled"`` (default): global average pool -> 512 -> Linear 256 -> ReLU -> Dropout -> Linear K.
  ~0.1 M head parameters instead of ~120 M; the usual choice for small inputs and small data sets.
- ``head="classic"``: VGG's two 4096-wide layers on the flattened final map (2x2x512 = 2048 inputs at
  64 px): Linear 4096 -> ReLU -> Dropout -> Linear 4096 -> ReLU -> Dropout -> Linear K.

``width`` scales every channel count (and the head) to make a thin VGG of the same depth for tests and
the demo. ``norm="batch"`` adds batch norm after each convolution (torchvision's ``vgg16_bn``): plain
VGG16 trained from scratch with Adam often stalls, batch norm makes it train reliably.

Pretrained weights come only from a local file (``load_imagenet_features``): a torchvision ``vgg16`` or
``vgg16_bn`` ImageNet state_dict. Its first convolution is summed over RGB, which is exactly its response
to a gray image fed as three equal channels; the head is trained from scratch (its shapes differ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from cxraug.core.errors import CxraugError

VGG16_LAYOUT = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
N_CONVS = sum(1 for v in VGG16_LAYOUT if v != "M")  # 13
N_POOLS = VGG16_LAYOUT.count("M")  # 5

Head = Literal["pooled", "classic"]
Norm = Literal["batch", "none"]


def scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class VGG16(nn.Module):
    """forward(x) -> logits [B, K]; features_of(x) -> penultimate features [B, F].
    Input: float [B, 1, H, W] in [-1, 1], H = W = image_size (a power of two >= 32)."""

    def __init__(
        self,
        n_classes: int,
        *,
        image_size: int = 64,
        width: float = 1.0,
        head: Head = "pooled",
        norm: Norm = "batch",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if image_size < 2**N_POOLS or image_size & (image_size - 1):
            raise ValueError(f"image_size must be a power of two >= {2**N_POOLS}, got {image_size}")
        if head not in ("pooled", "classic"):
            raise ValueError(f"head must be 'pooled' or 'classic', got {head!r}")
        self.config = {
            "n_classes": n_classes,
            "image_size": image_size,
            "width": width,
            "head": head,
            "norm": norm,
            "dropout": dropout,
        }
        layers: list[nn.Module] = []
        cin = 1
        for v in VGG16_LAYOUT:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            cout = scaled(v, width)
            layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"))
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.features = nn.Sequential(*layers)
        side = image_size // 2**N_POOLS
        if head == "pooled":
            hidden = scaled(256, width)
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.penultimate = nn.Sequential(nn.Linear(cin, hidden), nn.ReLU(inplace=True))
        else:
            hidden = scaled(4096, width)
            self.pool = nn.Flatten()
            self.penultimate = nn.Sequential(
                nn.Linear(cin * side * side, hidden),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden, hidden),
                nn.ReLU(inplace=True),
            )
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))
        self.feature_dim = hidden
        _init_weights(self)

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [B, feature_dim] (input of the last linear layer)."""
        return self.penultimate(self.pool(self.features(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features_of(x))


@torch.no_grad()
def _init_weights(model: nn.Module) -> None:
    """torchvision's VGG init: Kaiming-normal convs (fan_out), N(0, 0.01) linears, unit BN scales."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def _conv_prefixes(state: dict[str, torch.Tensor]) -> list[str]:
    """'features.N' of a torchvision VGG state_dict's convolutions (4-D weights), in network order."""
    prefixes = [
        k.removesuffix(".weight")
        for k, v in state.items()
        if k.startswith("features.") and k.endswith(".weight") and v.ndim == 4
    ]
    return sorted(prefixes, key=lambda p: int(p.split(".")[1]))


@torch.no_grad()
def load_imagenet_features(model: VGG16, path: str | Path) -> VGG16:
    """Copy a local torchvision VGG16(_bn) ImageNet state_dict's convolutions (and batch norms when both
    have them) into `model`; the first conv is summed over RGB. The head stays randomly initialised."""
    path = Path(path)
    if not path.is_file():
        raise CxraugError(
            f"classify.weights_path: {path} not found (a torchvision vgg16 state_dict saved with torch.save; "
            "or set weights_path: null to train from scratch)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CxraugError(
            f"classify.weights_path: {path} is not a readable state_dict ({type(e).__name__})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CxraugError(f"classify.weights_path: {path} does not hold a state_dict of tensors")
    source_convs = _conv_prefixes(state)
    source_norms = [k.removesuffix(".running_mean") for k in state if k.endswith(".running_mean")]
    own_convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    own_norms = [m for m in model.features if isinstance(m, nn.BatchNorm2d)]
    if len(source_convs) != N_CONVS:
        raise CxraugError(
            f"classify.weights_path: {path} has {len(source_convs)} conv layers, VGG16 has {N_CONVS}; "
            "use torchvision's vgg16 or vgg16_bn ImageNet weights"
        )
    if len(source_norms) not in (0, N_CONVS):
        raise CxraugError(
            f"classify.weights_path: {path} has {len(source_norms)} batch norms, expected 0 or 13"
        )
    if source_norms and not own_norms:
        raise CxraugError(
            f"classify.weights_path: {path} holds vgg16_bn weights (convs trained with batch norm); "
            "set classify.norm: batch"
        )
    for i, (prefix, conv) in enumerate(zip(source_convs, own_convs, strict=True)):
        weight = state[f"{prefix}.weight"]
        if i == 0:
            weight = weight.sum(dim=1, keepdim=True)  # RGB -> gray: the response to (x, x, x) is kept
        if weight.shape != conv.weight.shape:
            raise CxraugError(
                f"classify.weights_path: {prefix}.weight is {tuple(weight.shape)}, the model needs "
                f"{tuple(conv.weight.shape)}; pretrained weights need classify.width: 1"
            )
        conv.weight.copy_(weight)
        if conv.bias is not None and f"{prefix}.bias" in state:
            conv.bias.copy_(state[f"{prefix}.bias"])
    if source_norms:
        ordered_norms = sorted(source_norms, key=lambda p: int(p.split(".")[1]))
        for prefix, norm in zip(ordered_norms, own_norms, strict=True):
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, name).copy_(state[f"{prefix}.{name}"])
    # vgg16 (no BN) convs into a BN model: the batch norms keep their fresh init and re-learn the scales
    return model


def build_vgg16(
    n_classes: int,
    *,
    image_size: int = 64,
    width: float = 1.0,
    head: Head = "pooled",
    norm: Norm = "batch",
    dropout: float = 0.5,
    weights_path: str | Path | None = None,
) -> VGG16:
    model = VGG16(n_classes, image_size=image_size, width=width, head=head, norm=norm, dropout=dropout)
    if weights_path is not None:
        load_imagenet_features(model, weights_path)
    return model
