"""Settings of external validation: which second data sets every classifier variant is scored on."""

from __future__ import annotations

from pydantic import Field, field_validator

from cxraug.core.config.section import Section


class ExternalDataset(Section):
    name: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="NAME: the directory under data/scores/external and metrics/external",
    )
    path: str = Field(min_length=1, description="NIH-layout folder, class folders, or a MedMNIST+ npz")


class ExternalParams(Section):
    """`external_*` stages (docs/external.md): dvc.yaml expands one per data set x classifier variant."""

    datasets: list[ExternalDataset] = Field(
        default_factory=list, description="[{name, path}]; empty = no external stage"
    )

    @field_validator("datasets")
    @classmethod
    def _unique_names(cls, value: list[ExternalDataset]) -> list[ExternalDataset]:
        names = [d.name for d in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names must be unique, {', '.join(repeated)} repeats")
        return value
