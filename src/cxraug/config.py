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


class SynthesisFilterParams(Section):
    threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="keep a candidate only if its score (the model's confidence that it "
        "shows the intended class) is >= this",
    )
    max_tries_factor: float = Field(
        20.0, ge=1, description="cap on candidates drawn per class, as a multiple of the images wanted"
    )


class SynthesizeParams(Section):
    n_per_class: list[int] = Field(
        default_factory=lambda: [1000, 3000],
        min_length=1,
        description="synthetic images per class of each augmented variant; the largest is generated",
    )
    filter: SynthesisFilterParams = Field(default_factory=SynthesisFilterParams)
    batch_size: int = Field(256, ge=1, le=65536, description="candidates drawn per generator call")
    seed: int = Field(0, ge=0, description="seed of the candidate draws (per class streams derive from it)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="see runtime.pick_precision")

    @field_validator("n_per_class")
    @classmethod
    def _sorted_distinct_positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"every count must be a positive integer (got {v})")
        if v != sorted(set(v)):
            raise ValueError(f"counts must be distinct and in increasing order (got {v})")
        return v


class ReportParams(Section):
    n_bootstrap: int = Field(
        2000, ge=100, le=100_000, description="patient-level resamples of the paired comparison vs baseline"
    )
    seed: int = Field(0, ge=0, description="seed of the paired bootstrap")
    grid_images: int = Field(
        8, ge=1, le=32, description="images per class and source in the real vs synthetic figure"
    )


class Params(Section):
    """The whole params.yaml; a missing section takes its defaults."""

    prepare: PrepareParams = Field(default_factory=PrepareParams)
    synthesize: SynthesizeParams = Field(default_factory=SynthesizeParams)
    report: ReportParams = Field(default_factory=ReportParams)


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
