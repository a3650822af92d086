"""Typed settings: one pydantic model per `params.yaml` section, grouped by stage family in this package.

Each field declares its allowed range where it is defined, so `params.yaml`, the error message and the
code agree. `load_params` validates the whole file and turns any problem into one line naming the key.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from cxraug.core.config.data import DEFAULT_CLASSES, AugmentParams, PrepareParams
from cxraug.core.config.evaluation import (
    GAN_EXTRACTORS,
    INDEPENDENT_EXTRACTORS,
    CasParams,
    ClassifyParams,
    GanMetricsParams,
    ReportParams,
)
from cxraug.core.config.external import ExternalDataset, ExternalParams
from cxraug.core.config.generators import (
    GanFilterParams,
    ReplicatesParams,
    SamplerParams,
    SynthesisFilterParams,
    SynthesizeParams,
    TrainBaganParams,
    TrainDiffusionParams,
    TrainEmbedderParams,
    TrainOpenganParams,
)
from cxraug.core.config.section import Section, describe_error
from cxraug.core.config.sensitivity import FilterSensitivityParams
from cxraug.core.config.tune import (
    TRIAL_SECTIONS,
    IntStepRange,
    LogUniformRange,
    TuneParams,
    TunePrunerParams,
    TuneSearchSpace,
)
from cxraug.core.errors import CxraugError

__all__ = [
    "DEFAULT_CLASSES",
    "GAN_EXTRACTORS",
    "INDEPENDENT_EXTRACTORS",
    "TRIAL_SECTIONS",
    "AugmentParams",
    "CasParams",
    "ExternalDataset",
    "ExternalParams",
    "FilterSensitivityParams",
    "ClassifyParams",
    "GanFilterParams",
    "GanMetricsParams",
    "IntStepRange",
    "LogUniformRange",
    "Params",
    "PrepareParams",
    "ReplicatesParams",
    "ReportParams",
    "SamplerParams",
    "Section",
    "SynthesisFilterParams",
    "SynthesizeParams",
    "TrainBaganParams",
    "TrainDiffusionParams",
    "TrainEmbedderParams",
    "TrainOpenganParams",
    "TuneParams",
    "TunePrunerParams",
    "TuneSearchSpace",
    "dump_params",
    "load_params",
    "merge",
    "own_filter_mode",
    "parse_params",
    "trial_params",
]


class Params(Section):
    """The whole params.yaml; a missing section takes its defaults."""

    generators: list[str] = Field(
        default_factory=lambda: ["bagan", "opengan", "diffusion"],
        min_length=1,
        description="the generators (src/cxraug/gans/registry.py) the pipeline synthesizes with and the "
        "classify_gan / gan_metrics / external_gan stages expand over (dvc.yaml reads this list)",
    )
    prepare: PrepareParams = Field(default_factory=PrepareParams)
    train_bagan: TrainBaganParams = Field(default_factory=TrainBaganParams)
    train_embedder: TrainEmbedderParams = Field(default_factory=TrainEmbedderParams)
    train_opengan: TrainOpenganParams = Field(default_factory=TrainOpenganParams)
    train_diffusion: TrainDiffusionParams = Field(default_factory=TrainDiffusionParams)
    replicates: ReplicatesParams = Field(default_factory=ReplicatesParams)
    synthesize: SynthesizeParams = Field(default_factory=SynthesizeParams)
    report: ReportParams = Field(default_factory=ReportParams)
    classify: ClassifyParams = Field(default_factory=ClassifyParams)
    gan_metrics: GanMetricsParams = Field(default_factory=GanMetricsParams)
    external: ExternalParams = Field(default_factory=ExternalParams)
    filter_sensitivity: FilterSensitivityParams = Field(default_factory=FilterSensitivityParams)
    tune: TuneParams = Field(default_factory=TuneParams)

    @field_validator("generators")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"generator names must be distinct (got {v})")
        return v

    @model_validator(mode="after")
    def _sensitivity_adds_modes(self) -> Params:
        mode, s = own_filter_mode(self), self.filter_sensitivity
        column = f"{s.gan}_{s.n_per_class}"
        if mode in s.modes:
            raise ValueError(
                f"filter_sensitivity.modes: {mode} is {s.gan}'s own filter (synthesize.filter.per_gan) and "
                f"{s.n_per_class} is in synthesize.n_per_class, so its row would redraw and retrain {column} "
                f"exactly; leave it out: the report takes that row from {column}"
            )
        return self


def own_filter_mode(params: Params) -> str | None:
    """The filter-sensitivity mode that the study's own `<gan>_<n>` column already is, if any: the
    generator's synthesize.filter rule (a threshold rule at filter_sensitivity.threshold only) when n is
    one of synthesize.n_per_class. Its draw is the first n images per class of data/synthetic/<gan>/
    (the same seeds and candidate stream; only the try budget, max_tries_factor x n, is larger there)."""
    s = params.filter_sensitivity
    if s.gan not in params.generators or s.n_per_class not in params.synthesize.n_per_class:
        return None
    rules = params.synthesize.filter
    entry = rules.per_gan.get(s.gan)
    mode = entry.mode if entry else "threshold"
    threshold = rules.threshold if entry is None or entry.threshold is None else entry.threshold
    return None if mode == "threshold" and threshold != s.threshold else mode


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise CxraugError(f"{source}: " + "; ".join(describe_error(err) for err in e.errors())) from None


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


def trial_params(params: Params) -> Params:
    """The settings an Optuna trial trains with: params.yaml with `tune.overrides` on top."""
    return parse_params(merge(params.model_dump(mode="json"), params.tune.overrides), "tune.overrides")


def dump_params(params: Params) -> str:
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
