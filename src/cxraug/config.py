"""Typed settings: one pydantic model per `params.yaml` section.

Each field declares its allowed range where it is defined, so `params.yaml`, the error message and the
code agree. `load_params` validates the whole file and turns any problem into one line naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxraug.errors import CxraugError

DEFAULT_CLASSES = ["No Finding", "Infiltration", "Atelectasis", "Effusion", "Nodule"]


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class SynthesizeParams(Section):
    """Stand-in holding only the key classify reads; the synth-report branch's full model replaces it."""

    n_per_class: list[int] = Field(
        default_factory=lambda: [1000, 3000],
        min_length=1,
        description="synthetic (and standard-aug) images added per class; one classify variant per value",
    )

    @field_validator("n_per_class")
    @classmethod
    def _positive_distinct(cls, v: list[int]) -> list[int]:
        if min(v) < 1 or len(set(v)) != len(v):
            raise ValueError(f"must be distinct positive integers (got {v})")
        return v


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


class ClassifyParams(Section):
    """VGG16 per variant (classify.py): training, early stopping on val macro AUC, test once."""

    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1, description="one full training per seed"
    )
    epochs: int = Field(40, ge=1, le=1000, description="most epochs (passes over the training set)")
    patience: int = Field(8, ge=1, description="stop after this many epochs without a better val macro AUC")
    batch_size: int = Field(64, ge=2, le=4096, description="training batch")
    eval_batch_size: int = Field(512, ge=1, description="batch for val/test predictions")
    lr: float = Field(3e-4, gt=0, le=1, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW decoupled weight decay")
    head: Literal["pooled", "classic"] = Field(
        "pooled", description="pooled: GAP -> 256 -> K; classic: VGG's 4096-4096 on the flattened 2x2 map"
    )
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier (1 = VGG16; the demo runs 1/16)")
    norm: Literal["batch", "none"] = Field("batch", description="batch norm after each conv (vgg16_bn)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the head's linear layers")
    weights_path: str | None = Field(
        None, description="local torchvision vgg16(_bn) ImageNet state_dict; null = from scratch"
    )
    augment: AugmentParams = Field(default_factory=AugmentParams)
    bootstrap: int = Field(2000, ge=100, le=100_000, description="patient-level bootstrap resamples")
    ci_level: float = Field(0.95, gt=0.5, lt=1, description="confidence level of the intervals")
    device: str = Field("auto", description="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto measures on CPU")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers (got {v})")
        return v


class Params(Section):
    """The whole params.yaml; a missing section takes its defaults."""

    prepare: PrepareParams = Field(default_factory=PrepareParams)
    synthesize: SynthesizeParams = Field(default_factory=SynthesizeParams)
    classify: ClassifyParams = Field(default_factory=ClassifyParams)


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling against the documented params)"
    elif "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})" if "(got" not in message else ""
    return f"{key}: {message}"


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise CxraugError(f"{source}: " + "; ".join(_describe(err) for err in e.errors())) from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise CxraugError(f"{path}: no such params file (run from the repository root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CxraugError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise CxraugError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def merge(base: dict, overlay: dict) -> dict:
    """Nested update: keys of `overlay` replace those of `base`, sections are merged key by key."""
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = (
            merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def load_params(path: str | Path = "params.yaml", *overlays: str | Path) -> Params:
    """Read and validate params.yaml (then each overlay file on top); every problem is a one-line
    CxraugError naming the key."""
    raw = _read_yaml(Path(path))
    for overlay in overlays:
        raw = merge(raw, _read_yaml(Path(overlay)))
    return parse_params(raw, " + ".join(map(str, [path, *overlays])))


def dump_params(params: Params) -> str:
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
