"""Settings of the data stages: `prepare`, and the classic augmentation `classify` applies."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cxraug.core.config.section import Section

DEFAULT_CLASSES = ["No Finding", "Infiltration", "Atelectasis", "Effusion", "Nodule"]


class PrepareParams(Section):
    classes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CLASSES),
        min_length=2,
        description="NIH 'Finding Labels' to keep; only images carrying exactly one of them are used",
    )
    image_size: int = Field(64, description="output side in pixels: a power of two >= 32")
    train_fraction: float = Field(0.70, gt=0, lt=1, description="share of each class's images in train")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share in validation (early stopping)")
    test_fraction: float = Field(0.15, gt=0, lt=1, description="share in test (reported once)")
    use_official_split: bool = Field(
        False, description="test = NIH test_list.txt; val is carved from train_val_list.txt by patient"
    )
    max_per_class: int | None = Field(None, ge=1, description="cap of images per class, drawn with `seed`")
    on_bad_image: Literal["skip", "fail"] = Field(
        "skip", description="corrupt image: count and skip, or stop"
    )
    seed: int = Field(0, ge=0, description="seed of the patient split and of the per-class cap")
    workers: int = Field(0, ge=0, description="decoding processes; 0 = one per CPU core")

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 32 or v & (v - 1):
            raise ValueError(f"must be a power of two >= 32 (got {v})")
        return v

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"class names must be distinct (got {v})")
        return v

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> PrepareParams:
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train_fraction + val_fraction + test_fraction must sum to 1 (got {total:.4g})")
        return self


class AugmentParams(Section):
    """Classic transforms of `standard_aug_<n>` (data/augment.py): small affine, brightness, contrast."""

    rotation_deg: float = Field(10.0, ge=0, le=45, description="rotation drawn in [-r, r] degrees")
    translate: float = Field(0.06, ge=0, le=0.3, description="shift drawn in [-t, t] x side, each axis")
    scale: float = Field(0.10, ge=0, lt=1, description="zoom drawn in [1 - s, 1 + s]")
    brightness: float = Field(0.10, ge=0, le=0.5, description="offset in [-b, b] of the [0, 1] range")
    contrast: float = Field(0.10, ge=0, lt=1, description="factor in [1 - c, 1 + c] about the image mean")
    hflip_probability: float = Field(
        0.0, ge=0, le=1, description="left-right flips; off by default (a chest X-ray has a side)"
    )
