"""Settings of the Optuna searches (`cxraug tune`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from cxraug.core.config.evaluation import ClassifyParams
from cxraug.core.config.generators import (
    SynthesizeParams,
    TrainBaganParams,
    TrainDiffusionParams,
    TrainEmbedderParams,
    TrainOpenganParams,
)
from cxraug.core.config.section import Section, describe_error


class LogUniformRange(Section):
    """A search range sampled log-uniformly (learning rates): both bounds > 0, low < high."""

    low: float = Field(gt=0, le=1, description="smallest value tried (> 0: the scale is logarithmic)")
    high: float = Field(gt=0, le=1, description="largest value tried")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniformRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high (got {self.low:g} .. {self.high:g})")
        return self


class IntStepRange(Section):
    """An ordinal integer range low, low + step, ..., high (TPE models it on the number line)."""

    low: int = Field(ge=0, description="smallest value tried (0 allowed)")
    high: int = Field(ge=1, le=1_000_000, description="largest value tried")
    step: int = Field(1, ge=1, description="spacing of the values tried")

    @model_validator(mode="after")
    def _ordered(self) -> IntStepRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high (got {self.low} .. {self.high})")
        if (self.high - self.low) % self.step:
            raise ValueError(
                f"high - low must be a multiple of step (got {self.low}..{self.high} by {self.step})"
            )
        return self


class TuneSearchSpace(Section):
    """What an Optuna trial chooses (docs/tuning.md)."""

    lr_g: LogUniformRange = Field(
        default_factory=lambda: LogUniformRange(low=1e-6, high=1e-3),
        description="generator Adam learning rate, log-uniform (BAGAN's default 5e-6 to NewGAN's 1e-4)",
    )
    lr_d: LogUniformRange = Field(
        default_factory=lambda: LogUniformRange(low=1e-5, high=1e-3),
        description="discriminator Adam learning rate, log-uniform",
    )
    lr_ae: LogUniformRange = Field(
        default_factory=lambda: LogUniformRange(low=1e-4, high=1e-2),
        description="BAGAN only: autoencoder Adam learning rate, log-uniform",
    )
    lr: LogUniformRange = Field(
        default_factory=lambda: LogUniformRange(low=5e-5, high=2e-3),
        description="diffusion only: the U-Net's AdamW learning rate, log-uniform",
    )
    n_per_class: IntStepRange = Field(
        default_factory=lambda: IntStepRange(low=0, high=3000, step=500),
        description="synthetic images added per class (0 = real images only), an ordinal integer range",
    )


class TunePrunerParams(Section):
    """Optuna's MedianPruner: stop a trial whose intermediate value is below the median of earlier trials'
    values at the same step."""

    enabled: bool = Field(True, description="false: every trial runs to the end")
    n_startup_trials: int = Field(3, ge=0, le=1000, description="finished trials before any pruning")
    n_warmup_steps: int = Field(1, ge=0, description="steps of a trial that are never pruned")
    interval_steps: int = Field(1, ge=1, description="check every this many steps")


# The sections a trial trains with, and the model that validates each: tune.overrides may change any of
# their keys (the short schedule).
TRIAL_SECTIONS: dict[str, type[Section]] = {
    "train_bagan": TrainBaganParams,
    "train_embedder": TrainEmbedderParams,
    "train_opengan": TrainOpenganParams,
    "train_diffusion": TrainDiffusionParams,
    "synthesize": SynthesizeParams,
    "classify": ClassifyParams,
}


class TuneParams(Section):
    """`cxraug tune`: Optuna over a GAN's learning rates and the synthetic images per class (tune.py)."""

    seed: int = Field(0, ge=0, description="seed of the TPE sampler (per trial: seed and trial number)")
    n_startup_trials: int = Field(
        5, ge=0, le=1000, description="TPE: trials drawn at random before the model-based ones"
    )
    search: TuneSearchSpace = Field(default_factory=TuneSearchSpace)
    pruner: TunePrunerParams = Field(default_factory=TunePrunerParams)
    probe_per_class: int = Field(
        32,
        ge=0,
        le=4096,
        description="unfiltered candidates per class behind the per-GAN-epoch probe (0 = no probe: "
        "intermediate values only from the classifier's epochs)",
    )
    max_failures_in_a_row: int = Field(
        3, ge=1, description="a worker stops after this many consecutive failed trials"
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "train_bagan": {"ae_epochs": 10, "epochs": 20},
            "train_embedder": {"epochs": 10},
            "train_opengan": {"epochs": 15},
            "classify": {"seeds": [0], "budget": "epochs", "epochs": 10, "patience": 3},
        },
        description="partial sections (train_bagan, train_embedder, train_opengan, synthesize, classify) "
        "put over params.yaml for every trial: the short schedule",
    )

    @field_validator("overrides")
    @classmethod
    def _valid_overrides(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        models = TRIAL_SECTIONS
        problems = []
        for section, keys in v.items():
            if section not in models:
                problems.append(f"{section}: not a section trials use (one of {', '.join(TRIAL_SECTIONS)})")
                continue
            try:  # every key is validated where the section declares it (the rest take defaults here)
                models[section].model_validate(keys or {})
            except ValidationError as e:
                problems += [f"{section}.{describe_error(err)}" for err in e.errors()]
        if problems:
            raise ValueError("; ".join(problems))
        return v
