"""The per-class AUCs published by the study this project reproduces, shown beside ours in the report.

Source: "Data augmentation for chest X-ray classification using GAN" (short paper draft; VGG16 on NIH
ChestX-ray14, single-label images of five classes at 64x64), its two tables of per-class AUC when
augmenting 1000 and 3000 images per class (summarized in ../shared/paper.md). Its "NewGAN" is our
`opengan`. The paper gives no confidence intervals, seeds, split rule or training schedule, so these are
single numbers; its 3000-image table has no plain VGG16 column (the baseline does not depend on n).
"""

from __future__ import annotations

CITATION = (
    '"Data augmentation for chest X-ray classification using GAN" (short paper draft), '
    "tables of per-class AUC augmenting 1000 and 3000 images per class"
)

# n (images added per class) -> variant family -> class -> AUC, exactly as published
PAPER_AUC: dict[int, dict[str, dict[str, float]]] = {
    1000: {
        "baseline": {
            "No Finding": 0.713,
            "Infiltration": 0.702,
            "Atelectasis": 0.738,
            "Effusion": 0.812,
            "Nodule": 0.728,
        },
        "standard_aug": {
            "No Finding": 0.722,
            "Infiltration": 0.712,
            "Atelectasis": 0.742,
            "Effusion": 0.818,
            "Nodule": 0.735,
        },
        "bagan": {
            "No Finding": 0.726,
            "Infiltration": 0.699,
            "Atelectasis": 0.752,
            "Effusion": 0.813,
            "Nodule": 0.732,
        },
        "opengan": {
            "No Finding": 0.723,
            "Infiltration": 0.706,
            "Atelectasis": 0.746,
            "Effusion": 0.814,
            "Nodule": 0.719,
        },
    },
    3000: {
        "standard_aug": {
            "No Finding": 0.725,
            "Infiltration": 0.690,
            "Atelectasis": 0.735,
            "Effusion": 0.814,
            "Nodule": 0.728,
        },
        "bagan": {
            "No Finding": 0.712,
            "Infiltration": 0.693,
            "Atelectasis": 0.747,
            "Effusion": 0.810,
            "Nodule": 0.725,
        },
        "opengan": {
            "No Finding": 0.736,
            "Infiltration": 0.690,
            "Atelectasis": 0.744,
            "Effusion": 0.813,
            "Nodule": 0.737,
        },
    },
}

# the variant families the paper has columns for, in its column order
PAPER_FAMILIES = ("baseline", "standard_aug", "bagan", "opengan")


def paper_auc(n: int, family: str, class_name: str) -> float | None:
    """The published AUC, or None where the paper has no such cell."""
    return PAPER_AUC.get(n, {}).get(family, {}).get(class_name)
