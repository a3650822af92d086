"""Fidelity of synthetic images with torch-fidelity: Fréchet distance, KID, precision and recall.

Our own networks become torch-fidelity feature extractors (subclasses of its `FeatureExtractorBase`,
registered by name), so every figure is computed by torch-fidelity's code and works offline:

- ours, named by `define(name, load)`: the gan_metrics stage defines ``random`` (nets/random_features.py,
  a fixed random conv net: the independent space), ``embedder`` (models/embedder.pt, the frozen
  metric-learning embedder OpenGAN trains, conditions and filters with, unit vectors) and ``classifier``
  (the penultimate layer of models/classifier/baseline.pt, VGG16 trained on real train images); models are
  loaded by the caller's `load`;
- ``inception``:  torch-fidelity's own Inception-v3, only from a local weights file (nothing is downloaded).

torch-fidelity builds an extractor from the keyword arguments of its call; the file to load travels in its
`feature_extractor_weights_path`, as for its Inception. Images go in as a `Dataset` of in-memory uint8
[C, H, W] tensors (torch-fidelity's input convention: uint8, 0..255); our extractors scale them to the
[-1, 1] our nets were trained on, the Inception one takes 3 equal channels and resizes to 299 itself.

Features are extracted ONCE per image set (`extract_features`, torch-fidelity's dataset loop); the
metrics of the whole set and of each class are then torch-fidelity's metric functions applied to slices
of those features (`fidelity_scores`), which is what `calculate_metrics` does after its own extraction —
`tests/test_gan_metrics.py` checks the two agree. Names: FD, not FID, unless the features are Inception's.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.helpers import vassert
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric
from torch_fidelity.metric_prc import KEY_METRIC_PRECISION, KEY_METRIC_RECALL, prc_features_to_metric
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from cxraug.core.errors import CxraugError

FEATURE = "features"  # the one feature our extractors provide
INCEPTION = "inception"
INCEPTION_NAME, INCEPTION_FEATURE = "inception-v3-compat", "2048"  # torch-fidelity's FID/KID defaults


class UInt8Images(Dataset):
    """uint8 [N, H, W] images as the uint8 [C, H, W] tensors torch-fidelity feeds its extractors
    (C = 3 equal channels for extractors built for RGB)."""

    def __init__(self, images: torch.Tensor, channels: int = 1) -> None:
        if images.dtype != torch.uint8 or images.ndim != 3:
            raise ValueError(f"expected uint8 images [N, H, W], got {images.dtype} {tuple(images.shape)}")
        self.images, self.channels = images, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].unsqueeze(0).expand(self.channels, -1, -1)


class DomainFeatures(FeatureExtractorBase):
    """A torch-fidelity extractor around one of our nets: uint8 [B, 1, H, W] -> float32 [B, F]. The net
    comes from `load(feature_extractor_weights_path)` (a module taking [-1, 1] floats); fp32 always, since
    reduced precision would move the distances."""

    def __init__(self, name: str, features_list, feature_extractor_weights_path=None, **kwargs) -> None:
        super().__init__(name, features_list)
        self.net = self.load(feature_extractor_weights_path).float().eval().requires_grad_(False)

    @staticmethod
    def load(path) -> nn.Module:
        raise NotImplementedError

    @staticmethod
    def get_provided_features_list():
        return (FEATURE,)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return FEATURE

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting uint8 images")
        vassert(x.dim() == 4 and x.shape[1] == 1, f"Expecting grayscale images Bx1xHxW, got {tuple(x.shape)}")
        x = x.float().div(127.5).sub(1.0)  # datasets.to_model_range: what our nets were trained on
        return (self.net(x).float().flatten(1),)


def _model_file(path) -> Path:
    if path is None or not Path(path).is_file():
        raise CxraugError(f"{path}: model file for a feature extractor not found")
    return Path(path)


class Penultimate(nn.Module):
    """A classifier's penultimate activations (its `features_of`) as a feature net."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.features_of(x)


# our name -> (torch-fidelity registry name, class); filled by `define` (the gan_metrics stage defines
# "embedder" and "classifier"), so this module loads no model of its own
DOMAIN_EXTRACTORS: dict[str, tuple[str, type[DomainFeatures]]] = {}


def define(name: str, load: Callable[[Path | str], nn.Module], needs_file: bool = True) -> None:
    """A feature space `name` whose net `load(model file)` builds (a module taking [-1, 1] floats);
    `needs_file=False`: a net built from no file, `load` gets the weights argument as given (the fixed
    random net: its seed)."""

    class Features(DomainFeatures):
        @staticmethod
        def load(path) -> nn.Module:
            return load(_model_file(path) if needs_file else path)

    Features.__name__ = Features.__qualname__ = f"{name.title()}Features"
    DOMAIN_EXTRACTORS[name] = (f"cxraug-{name}", Features)


def register(name: str, cls: type[FeatureExtractorBase]) -> None:
    """torch-fidelity's registry refuses a second registration of a name; registering is idempotent here."""
    if FEATURE_EXTRACTORS_REGISTRY.get(name) is not cls:
        FEATURE_EXTRACTORS_REGISTRY.pop(name, None)
        register_feature_extractor(name, cls)


def extract_features(
    images: torch.Tensor,
    extractor: str,
    weights_path: str | Path | None,
    *,
    batch_size: int = 256,
    device: torch.device | None = None,
) -> torch.Tensor:
    """float64 [N, F] features of uint8 images [N, H, W] through torch-fidelity's extraction loop.
    `extractor`: embedder | classifier | inception, or the name of any extractor providing "features" that
    the caller registered with torch-fidelity (the tests' tiny one)."""
    cuda = device is not None and device.type == "cuda"
    name, feature, channels = extractor, FEATURE, 1
    if extractor == INCEPTION:
        name, feature, channels = INCEPTION_NAME, INCEPTION_FEATURE, 3
        if weights_path is None or not Path(weights_path).is_file():
            raise CxraugError(
                f"gan_metrics.inception_weights: {weights_path} not found (torch-fidelity's Inception-v3 "
                "weights file, weights-inception-2015-12-05-6726825d.pth; or set it to null)"
            )
    elif extractor in DOMAIN_EXTRACTORS:
        name, cls = DOMAIN_EXTRACTORS[extractor]
        register(name, cls)
    fe = create_feature_extractor(
        name,
        [feature],
        cuda=cuda,
        verbose=False,
        feature_extractor_weights_path=None if weights_path is None else str(weights_path),
    )
    if len(images) == 0:
        return torch.zeros((0, 0), dtype=torch.float64)
    # save_cpu_ram: no DataLoader worker processes (the images are already in memory)
    features = get_featuresdict_from_dataset(
        UInt8Images(images, channels), fe, batch_size, cuda, save_cpu_ram=True, verbose=False
    )[feature]
    return features.double()


def requirements(min_images: int, pr_neighbourhood: int) -> dict[str, int]:
    """Fewest images per side each metric needs: torch-fidelity's own (a covariance needs 2 images, KID's
    unbiased estimate 2 per subset, precision/recall k + 1 for the k-th neighbour) or the user's floor."""
    return {"fd": max(2, min_images), "kid": max(2, min_images), "pr": max(pr_neighbourhood + 1, min_images)}


def fidelity_scores(
    synthetic: torch.Tensor,
    real: torch.Tensor,
    *,
    kid_subsets: int,
    kid_subset_size: int,
    pr_neighbourhood: int,
    min_images: int,
    seed: int,
) -> tuple[dict[str, float], list[str]]:
    """FD, KID (mean, std over subsets), precision and recall of synthetic vs real features [N, F], by
    torch-fidelity's metric functions; a metric whose sample size is below its requirement is left out and
    its reason returned. KID subsets hold min(kid_subset_size, n_synthetic, n_real) images: the unbiased
    MMD estimate does not depend on the subset size (only its spread does)."""
    n_synth, n_real = len(synthetic), len(real)
    smallest = min(n_synth, n_real)
    need = requirements(min_images, pr_neighbourhood)
    out: dict[str, float] = {}
    skipped = [
        f"{metric}: {n_synth} / {n_real} images, needs >= {n} on each side"
        for metric, n in need.items()
        if smallest < n
    ]
    if smallest >= need["fd"]:
        stats = [fid_features_to_statistics(f.cpu()) for f in (synthetic, real)]
        out["fd"] = fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    if smallest >= need["kid"]:
        subset = min(kid_subset_size, smallest)
        kid = kid_features_to_metric(
            synthetic,
            real,
            kid_subsets=kid_subsets,
            kid_subset_size=subset,
            rng_seed=seed,
            verbose=False,
        )
        out |= {
            "kid": kid[KEY_METRIC_KID_MEAN],
            "kid_std": kid[KEY_METRIC_KID_STD],
            "kid_subset_size": subset,
        }
    if smallest >= need["pr"]:
        # torch-fidelity's convention: input 1 generated, input 2 real
        pr = prc_features_to_metric(
            synthetic,
            real,
            prc_neighborhood=pr_neighbourhood,
            save_cpu_ram=True,
            verbose=False,
        )
        out |= {"precision": pr[KEY_METRIC_PRECISION], "recall": pr[KEY_METRIC_RECALL]}
    undefined = [k for k, v in out.items() if not np.isfinite(v)]
    skipped += [f"{k}: not finite ({out.pop(k)})" for k in undefined]
    return {k: int(v) if k == "kid_subset_size" else float(v) for k, v in out.items()}, skipped


def metric_key(metric: str, extractor: str) -> str:
    """'fd' + 'embedder' -> 'fd_embedder'; Inception's Fréchet distance is the FID: 'fid_inception'."""
    if metric == "fd" and extractor == INCEPTION:
        metric = "fid"
    if metric == "kid_subset_size":
        return metric
    return f"{metric}_{extractor}"
