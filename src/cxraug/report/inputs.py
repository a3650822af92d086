"""What the report reads: the variants it expects, their metrics files and test scores, the synthetic
indexes. A variant that has not been run is absent here and listed as missing by the report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxraug.core.errors import CxraugError
from cxraug.gans import registry
from cxraug.synthesis.files import read_index

BASELINE = "baseline"
LABELS = {
    "baseline": "VGG16",
    "standard_aug": "+ standard aug",
    **{g.name: f"+ {g.label}" for g in registry.GENERATORS.values()},
    "weighted_loss": "weighted loss",
    "oversample": "oversample",
}


def family(variant: str) -> str:
    """'bagan_1000' -> 'bagan'; variants without a count are their own family."""
    head, _, tail = variant.rpartition("_")
    return head if tail.isdigit() else variant


def study_generators(generators: Sequence[str] | None = None) -> list[str]:
    """The generators a report covers, in the registry's order: params.yaml `generators` (None: all)."""
    return [g for g in registry.names() if generators is None or g in generators]


def table_variants(n: int, generators: Sequence[str] | None = None) -> list[str]:
    """The columns of the table for n images per class: the paper's (baseline, standard augmentation, the
    generators of the study), then the cheap rebalancing."""
    gans = [f"{name}_{n}" for name in study_generators(generators)]
    return [BASELINE, f"standard_aug_{n}", *gans, "weighted_loss", "oversample"]


def all_variants(ns: list[int], generators: Sequence[str] | None = None) -> list[str]:
    names = [v for n in ns for v in table_variants(n, generators)]
    return list(dict.fromkeys(names))


def label(variant: str) -> str:
    return LABELS.get(family(variant), variant)


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    classify_metrics: Path  # metrics/classify/<V>.json
    scores: Path  # data/scores/<V>.npz
    synthetic: Path  # data/synthetic/<gan>/
    prepared: Path  # data/prepared/
    gan_metrics: Path | None = None  # metrics/gan/<gan>/seed<k>.json (report/gan.py)
    external_metrics: Path | None = None  # metrics/external/<NAME>/<V>.json (report/external.py)


@dataclass(frozen=True)
class VariantMetrics:
    """One variant's metrics/classify JSON: per class (and macro) AUC mean and std over seeds, 95% CI."""

    name: str
    classes: tuple[str, ...]
    mean: dict[str, float]
    std: dict[str, float]
    ci: dict[str, tuple[float, float]]
    seeds: list[int]
    train_images: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None
    network: str | None = None  # "VGG16-BN, pooled head" (classify.norm / head / width)
    runs: list[str] = field(default_factory=list)
    per_run: dict[str, dict] = field(default_factory=dict)  # steps, best step, images seen

    MACRO = "macro AUC"

    @classmethod
    def read(cls, path: Path) -> VariantMetrics:
        try:
            m = json.loads(path.read_text())
            classes = tuple(m["classes"])
            return cls(
                name=path.stem,
                classes=classes,
                mean={**m["per_class_auc"], cls.MACRO: m["macro_auc"]},
                std={**m["per_class_auc_std"], cls.MACRO: m["macro_auc_std"]},
                ci={c: tuple(v) for c, v in {**m["per_class_auc_ci"], cls.MACRO: m["macro_auc_ci"]}.items()},
                seeds=list(m["seeds"]),
                train_images=dict(m.get("train_images") or {}),
                run_id=m.get("mlflow_run_id"),
                network=m.get("network"),
                runs=list(m.get("runs") or []),
                per_run=dict(m.get("per_run") or {}),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CxraugError(
                f"{path}: not a classify metrics file ({type(e).__name__}: {e}); rerun classify"
            ) from None


@dataclass(frozen=True)
class TestScores:
    """One variant's data/scores npz: softmax of every seed's model on the real test split."""

    scores: np.ndarray  # float [S, N, K]
    labels: np.ndarray  # int [N]
    patient_ids: np.ndarray
    image_index: np.ndarray
    classes: tuple[str, ...]
    run_groups: np.ndarray | None = None  # generator seed of each run (GAN variants), else None

    @classmethod
    def read(cls, path: Path) -> TestScores:
        try:
            with np.load(path, allow_pickle=False) as z:
                scores = z["scores"]
                groups = z["generator_seeds"] if "generator_seeds" in z.files else None
                return cls(
                    scores=scores if scores.ndim == 3 else scores[None],
                    labels=z["labels"].astype(np.int64),
                    patient_ids=z["patient_ids"].astype(str),
                    image_index=z["image_index"].astype(str),
                    classes=tuple(str(c) for c in z["classes"]),
                    run_groups=groups if groups is not None and (groups >= 0).all() else None,
                )
        except (OSError, ValueError, KeyError) as e:
            raise CxraugError(f"{path}: not a classify scores file ({e}); rerun classify") from None

    @property
    def seed_mean(self) -> np.ndarray:
        return self.scores.mean(0)


def read_metrics(inputs: Inputs, variants: list[str], classes: tuple[str, ...]) -> dict[str, VariantMetrics]:
    found = {}
    for v in variants:
        path = inputs.classify_metrics / f"{v}.json"
        if path.is_file():
            found[v] = VariantMetrics.read(path)
            if found[v].classes != classes:
                raise CxraugError(
                    f"{path} is for classes {list(found[v].classes)}, data/prepared has {list(classes)}; "
                    "rerun classify"
                )
    return found


def read_scores(inputs: Inputs, variants: list[str]) -> dict[str, TestScores]:
    return {
        v: TestScores.read(inputs.scores / f"{v}.npz")
        for v in variants
        if (inputs.scores / f"{v}.npz").is_file()
    }


def read_synthetic_indexes(directory: Path) -> dict:
    """{"<gan>/seed<k>": index} of every generator replicate's synthetic set (not the filter-sensitivity
    sets <gan>-filter-<mode>: report/filters.py shows those)."""
    if not directory.is_dir():
        return {}
    return {
        f"{d.parent.name}/{d.name}": read_index(d)
        for d in sorted(directory.glob("*/seed*"))
        if (d / "index.csv").is_file() and "-filter-" not in d.parent.name
    }
