"""Score a trained variant on an external set, summarise the AUCs, and write the scores file.

Kept apart from the classify stage: nothing here trains, and nothing here knows DVC or MLflow, so the
`external-test` verb, its DVC stage and the report can all call the same three steps:
`score_external` -> `external_metrics` -> `write_external_scores` (+ `atomic_write_json` of the metrics).

A study class absent from the external set has no positives, so its one-vs-rest AUC is undefined: it is
None in the metrics (JSON null; never 0.5), and the macro AUC is the mean over the classes that have one
(`macro_over` lists them). The other classes' AUCs are unaffected by the absent ones: one-vs-rest AUC of
class k depends only on score column k and which images are class k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxraug.classifier.predict import load_seed_classifiers, predict_proba, saved_runs
from cxraug.core import layout
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import Precision, atomic_savez, pick_precision, safe_load
from cxraug.data.external import ExternalSet
from cxraug.metrics.auc import per_class_auc
from cxraug.metrics.inference import two_level_interval
from cxraug.nets.vgg import VGG16


@dataclass(frozen=True)
class SeedModel:
    seed: int  # the classifier seed
    model: VGG16  # eval mode; `classes` names its outputs
    key: str = ""  # the run: s<c>, or g<g>s<c> for a GAN variant (classifier/seeds.py)
    generator_seed: int | None = None


def load_seed_models(path: str | Path, device: torch.device | str = "cpu") -> list[SeedModel]:
    """Every seed's classifier in a variant's model file (models/classifier/<V>.pt), first seed first."""
    saved = safe_load(path)
    if not isinstance(saved, dict) or not {"config", "classes", "state_dict"} <= saved.keys():
        raise CxraugError(f"{path}: not a classifier written by `cxraug classify`; rerun classify")
    models = load_seed_classifiers(path, device)
    runs = saved_runs(path)
    if len(runs) != len(models):  # a file written before classify named its runs
        runs = [(f"s{seed}", None) for seed, _ in models]
    return [SeedModel(seed, m, key, g) for (seed, m), (key, g) in zip(models, runs, strict=True)]


def score_external(
    models: Sequence[SeedModel],
    external: ExternalSet,
    precision: Precision | str = "fp32",
    batch_size: int = 512,
) -> np.ndarray:
    """Softmax scores float32 [seeds, N, K] of every model on the external images (the models' classes
    and input size must be the study's the set was read for)."""
    if not models:
        raise ValueError("no classifiers to score")
    for m in models:
        classes = tuple(getattr(m.model, "classes", ()))
        if classes != external.classes:
            raise CxraugError(
                f"seed {m.seed}'s classifier predicts {list(classes)} but the external set was read for "
                f"{list(external.classes)}; read it with the study's classes"
            )
        if m.model.config["image_size"] != external.image_size:
            raise CxraugError(
                f"seed {m.seed}'s classifier takes {m.model.config['image_size']} px images, the external "
                f"set is {external.image_size} px; read it at the study's image_size"
            )
    images = torch.from_numpy(external.images)
    out = []
    for m in models:
        device = next(m.model.parameters()).device
        mode = pick_precision(device, precision) if isinstance(precision, str) else precision
        model = mode.module(m.model)
        out.append(predict_proba(model, images, mode, batch_size))
    return np.stack(out).astype(np.float32)


def _rounded(values: np.ndarray, classes: Sequence[str]) -> dict[str, float | None]:
    return {c: (None if np.isnan(v) else round(float(v), 5)) for c, v in zip(classes, values, strict=True)}


def external_metrics(
    scores: np.ndarray,
    external: ExternalSet,
    seeds: Sequence[int],
    n_boot: int = 2000,
    level: float = 0.95,
    bootstrap_seed: int = 0,
    *,
    variant: str | None = None,
    name: str | None = None,
    generator_seeds: Sequence[int | None] | None = None,
) -> dict:
    """The metrics file's content (JSON-ready; undefined values are None): per-class and macro AUC (mean
    over runs) with two-level intervals (metrics/inference.py: training runs x external patients where the
    set has them, else images; a GAN variant's runs grouped by `generator_seeds`, one per run); the SD
    over runs;
    images per class, skips by reason and the md5 of the scored pixels. `mlflow_run_id` is left None for
    the caller that logs the run; `variant` and `name` (the external set's NAME) are recorded as given."""
    scores = np.asarray(scores, dtype=np.float64)
    classes = list(external.classes)
    if scores.shape != (len(seeds), len(external), len(classes)):
        raise ValueError(
            f"scores {scores.shape} do not fit {len(seeds)} seeds x {len(external)} images x {len(classes)}"
        )
    generators = None if generator_seeds is None or None in generator_seeds else list(generator_seeds)
    run_names = (
        [str(int(s)) for s in seeds]
        if generators is None
        else [f"g{g}s{int(s)}" for g, s in zip(generators, seeds, strict=True)]
    )
    present = [k for k, n in enumerate(external.counts().values()) if n]
    k_all = len(classes)
    auc, lo, hi, std = (np.full(k_all, np.nan) for _ in range(4))
    per_seed = np.full((len(seeds), k_all), np.nan)
    macro = macro_lo = macro_hi = macro_std = float("nan")
    resamples = undefined = 0
    if len(present) >= 2:  # one-vs-rest needs negatives: at least two classes with images
        # AUC of class k depends only on column k and the images of class k: score the present classes
        # as a K'-class problem (labels renumbered) and put the results back in the study's order
        remap = np.full(k_all, -1)
        remap[present] = np.arange(len(present))
        labels = remap[external.labels]
        sub = scores[:, :, present]
        groups = None if generators is None else np.asarray([f"g{g}" for g in generators])
        ci = two_level_interval(
            sub, labels, external.bootstrap_ids, groups, n_boot=n_boot, level=level, seed=bootstrap_seed
        )
        auc[present], lo[present], hi[present], std[present] = ci.estimate, ci.lo, ci.hi, ci.run_std[:-1]
        for s in range(len(seeds)):
            per_seed[s, present] = per_class_auc(sub[s], labels)
        macro, macro_lo, macro_hi = ci.macro, ci.macro_lo, ci.macro_hi
        macro_std, resamples, undefined = float(ci.run_std[-1]), ci.n_boot, ci.undefined_resamples
    return {
        "variant": variant,
        "name": name,
        "source": external.layout,
        "data": str(external.root),
        "classes": classes,
        "seeds": [int(s) for s in seeds],
        "per_class_auc": _rounded(auc, classes),
        "per_class_auc_std": _rounded(std, classes),
        "per_class_auc_ci": {
            c: (None if np.isnan(a) else [round(float(a), 5), round(float(b), 5)])
            for c, a, b in zip(classes, lo, hi, strict=True)
        },
        "macro_auc": _nan_or(macro),
        "macro_auc_std": _nan_or(macro_std),
        "macro_auc_ci": None if np.isnan(macro_lo) else [round(macro_lo, 5), round(macro_hi, 5)],
        "macro_over": [classes[k] for k in present] if len(present) >= 2 else [],
        "absent_classes": external.absent_classes,
        "generator_seeds": generators,
        "per_seed_auc": {key: _rounded(per_seed[i], classes) for i, key in enumerate(run_names)},
        "images": len(external),
        "images_per_class": external.counts(),
        "patients": None if external.patient_ids is None else int(len(np.unique(external.patient_ids))),
        "skipped": dict(external.skipped),
        "skipped_classes": dict(external.other_classes),
        "pixels_md5": external.md5(),
        "bootstrap": {
            "unit": external.bootstrap_unit,
            "resamples": int(resamples),
            "level": level,
            "undefined_resamples": int(undefined),
        },
        "mlflow_run_id": None,
    }


def _nan_or(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 5)


def check_name(name: str) -> str:
    """NAME becomes a directory under data/scores/external and metrics/external: one plain component."""
    if not name or name in (".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise CxraugError(f"external set name {name!r}: use a plain name (letters, digits, '-', '_')")
    return name


def external_paths(
    name: str,
    variant: str,
    scores_root: Path = layout.EXTERNAL_SCORES,
    metrics_root: Path = layout.EXTERNAL_METRICS,
) -> tuple[Path, Path]:
    """(scores npz, metrics json) of variant V on external set NAME: <scores_root>/<NAME>/<V>.npz and
    <metrics_root>/<NAME>/<V>.json (core/layout.py's by default)."""
    check_name(name)
    return scores_root / name / f"{variant}.npz", metrics_root / name / f"{variant}.json"


def write_external_scores(
    path: str | Path,
    external: ExternalSet,
    scores: np.ndarray,
    seeds: Sequence[int],
    generator_seeds: Sequence[int | None] | None = None,
) -> Path:
    """data/scores/external/<NAME>/<V>.npz, atomically, with the test scores' fields (`patient_ids` only
    where the set has patients; `generator_seeds` of each run, -1 for none, so the comparisons cluster a
    GAN variant's runs by generator seed as on the internal test)."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.shape[:2] != (len(seeds), len(external)):
        raise ValueError(f"scores {scores.shape} do not fit {len(seeds)} seeds x {len(external)} images")
    arrays = {
        "scores": scores,
        "labels": external.labels.astype(np.int64),
        "image_index": external.image_index.astype(str),
        "classes": np.asarray(external.classes, dtype=str),
        "seeds": np.asarray(seeds, dtype=np.int64),
    }
    if external.patient_ids is not None:
        arrays["patient_ids"] = external.patient_ids.astype(str)
    if generator_seeds is not None:
        arrays["generator_seeds"] = np.asarray(
            [-1 if g is None else g for g in generator_seeds], dtype=np.int64
        )
    return atomic_savez(path, **arrays)
