"""Classifier variants: what each adds to the real training split, and the training set it builds.

Variants (n in synthesize.n_per_class, <gan> a generator of gans/registry.py):
  baseline           the real training split as is
  weighted_loss      cross-entropy weighted by inverse class frequency
  oversample         every epoch draws class-balanced batches (core/training.balanced_indices)
  standard_aug_<n>   + n classic-transform copies of real TRAIN images per class (data/augment.py)
  <gan>_<n>          + the first n accepted synthetic images per class from data/synthetic/<gan>
  <gan>_<n>_<mode>   the filter-sensitivity row (filter_sensitivity: gan, n_per_class, modes): + the first
                     n images per class drawn under filter <mode>, from data/synthetic/<gan>-filter-<mode>;
                     a class the filter could not fill adds the images that passed (counted in its metrics)
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cxraug.classifier.train import inverse_frequency_weights
from cxraug.core import layout
from cxraug.core.config import ClassifyParams, FilterSensitivityParams
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
    filter: str | None = None  # filter-sensitivity variants: the filter mode its images were drawn under

    @property
    def source(self) -> str | None:
        """Its image set under data/synthetic and metrics/synthesize: <gan> or <gan>-filter-<mode>."""
        if self.gan is None:
            return None
        return self.gan if self.filter is None else layout.filter_set(self.gan, self.filter)


def filter_variants(sensitivity: FilterSensitivityParams) -> list[str]:
    """The filter-sensitivity row's variants, one per mode: bagan_1000_none, bagan_1000_threshold, ..."""
    return [f"{sensitivity.gan}_{sensitivity.n_per_class}_{mode}" for mode in sensitivity.modes]


def valid_variants(
    n_per_class: Sequence[int],
    generators: Sequence[str],
    sensitivity: FilterSensitivityParams | None = None,
) -> list[str]:
    additive = (STANDARD_AUG, *generators)
    row = filter_variants(sensitivity) if sensitivity and sensitivity.gan in generators else []
    return [*REBALANCING, *(f"{kind}_{n}" for kind in additive for n in n_per_class), *row]


def parse_variant(
    name: str,
    n_per_class: Sequence[int],
    generators: Sequence[str],
    sensitivity: FilterSensitivityParams | None = None,
) -> Variant:
    """'bagan_1000' -> Variant('bagan_1000', 'bagan', 1000, gan='bagan'); with `sensitivity`,
    'bagan_1000_argmax' -> Variant(..., 'bagan', 1000, gan='bagan', filter='argmax'); anything not
    allowed is a one-line error."""
    if name in REBALANCING:
        return Variant(name, name)
    if sensitivity is not None and sensitivity.gan in generators and name in filter_variants(sensitivity):
        mode = name.removeprefix(f"{sensitivity.gan}_{sensitivity.n_per_class}_")
        return Variant(name, sensitivity.gan, sensitivity.n_per_class, gan=sensitivity.gan, filter=mode)
    additive = (STANDARD_AUG, *generators)
    match = re.fullmatch(r"({})_(\d+)".format("|".join(map(re.escape, additive))), name)
    if match and int(match[2]) in n_per_class:
        kind = match[1]
        return Variant(name, kind, int(match[2]), gan=kind if kind in generators else None)
    raise CxraugError(
        f"unknown variant '{name}'; valid: {', '.join(valid_variants(n_per_class, generators, sensitivity))} "
        "(n comes from synthesize.n_per_class; <gan>_<n>_<mode> from filter_sensitivity)"
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
