"""Settings of the filter-sensitivity row: how one generator's result moves with its synthesis filter."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from cxraug.core.config.section import Section

FilterMode = Literal["none", "argmax", "threshold"]


class FilterSensitivityParams(Section):
    """`synthesize_filter@<mode>-<k>` and `classify_filter@<mode>` (docs/report.md): the generator's
    images drawn under each filter mode, n per class, and the classifier variant <gan>_<n>_<mode> trained
    on each, with the same replicates and step budget as classify_gan."""

    gan: str = Field("bagan", min_length=1, description="the generator whose filter is varied")
    n_per_class: int = Field(1000, ge=1, description="synthetic images per class wanted under every mode")
    modes: list[FilterMode] = Field(
        default_factory=lambda: ["none", "threshold"],
        min_length=1,
        description="the filter modes compared (synthesis/filters.py); the first is the reference. The "
        "generator's own rule is not listed when n_per_class is one of synthesize.n_per_class: its row is "
        "the study's <gan>_<n> column",
    )
    threshold: float = Field(0.5, ge=0, le=1, description="the cut-off of mode threshold")

    @field_validator("modes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"modes must be distinct (got {v})")
        return v
