"""Classifier variants: what each adds to the real training split, and the training set it builds.

Variants (n in synthesize.n_per_class, <gan> a generator of gans/registry.py):
  baseline           the real training split as is
  weighted_loss      cross-entropy weighted by inverse class frequency
  oversample         every epoch draws class-balanced batches (core/training.balanced_indices)
  standard_aug_<n>   + n classic-transform copies of real TRAIN images per class (data/augment.py)
  <gan>_<n>          + the first n accepted synthetic images per class from data/synthetic/<gan>
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cxraug.classifier.train import inverse_frequency_weights
from cxraug.core.config import ClassifyParams
from cxraug.core.errors import CxraugError
from cxraug.data.augment import augmented_copies
from cxraug.data.datasets import Split

REBALANCING = ("baseline", "weighted_loss", "oversample")
STANDARD_AUG = "standard_aug"


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # one of REBALANCING, STANDARD_AUG or a generator's name
    n: int = 0  # extra images per class
    gan: str | None = None  # the generator whose images it adds


def valid_variants(n_per_class: Sequence[int], generators: Sequence[str]) -> list[str]:
    additive = (STANDARD_AUG, *generators)
    return [*REBALANCING, *(f"{kind}_{n}" for kind in additive for n in n_per_class)]


def parse_variant(name: str, n_per_class: Sequence[int], generators: Sequence[str]) -> Variant:
    """'bagan_1000' -> Variant('bagan_1000', 'bagan', 1000, gan='bagan'); anything not allowed is a
    one-line error."""
    if name in REBALANCING:
        return Variant(name, name)
    additive = (STANDARD_AUG, *generators)
    match = re.fullmatch(r"({})_(\d+)".format("|".join(map(re.escape, additive))), name)
    if match and int(match[2]) in n_per_class:
        kind = match[1]
        return Variant(name, kind, int(match[2]), gan=kind if kind in generators else None)
    raise CxraugError(
        f"unknown variant '{name}'; valid: {', '.join(valid_variants(n_per_class, generators))} "
        "(n comes from synthesize.n_per_class)"
    )


# ------------------------------------------------------------------------------------------ training set


@dataclass(frozen=True)
class TrainingSet:
    images: torch.Tensor  # uint8 [N, H, W]: real train first, then the extra images
    labels: torch.Tensor
    n_real: int  # images[:n_real] is the real training split
    class_weights: torch.Tensor | None = None
    balanced: bool = False

    def counts(self, classes: tuple[str, ...]) -> dict[str, int]:
        return dict(zip(classes, torch.bincount(self.labels, minlength=len(classes)).tolist(), strict=True))


def _augment_generator(seed: int) -> torch.Generator:
    """A stream of its own (not the training generator's), so the extra images depend only on the seed."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0xA06]).generate_state(1)[0]))


def build_training_set(
    variant: Variant,
    train: Split,
    params: ClassifyParams,
    seed: int,
    synthetic: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainingSet:
    """The real training split plus whatever the variant adds, made from TRAIN images (standard_aug) or
    the given synthetic images (GAN variants, from `load_extra_synthetic`); nothing else can enter."""
    if variant.kind == "weighted_loss":
        weights = inverse_frequency_weights(train.labels, train.n_classes)
        return TrainingSet(train.images, train.labels, len(train), class_weights=weights)
    if variant.kind == "oversample":
        return TrainingSet(train.images, train.labels, len(train), balanced=True)
    if variant.kind == "baseline":
        return TrainingSet(train.images, train.labels, len(train))
    if variant.kind == STANDARD_AUG:
        extra, extra_labels = augmented_copies(
            train.images, train.labels, variant.n, params.augment, _augment_generator(seed), train.n_classes
        )
    elif synthetic is None:
        raise ValueError(f"variant {variant.name} needs its synthetic images (load_extra_synthetic)")
    else:
        extra, extra_labels = synthetic
    return TrainingSet(torch.cat([train.images, extra]), torch.cat([train.labels, extra_labels]), len(train))
