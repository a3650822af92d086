"""A classifier variant's metrics file (metrics/classify/<V>.json) from its finished runs."""

from __future__ import annotations

import numpy as np

from cxraug.classifier.seeds import SeedResult
from cxraug.classifier.train import network_label
from cxraug.classifier.variants import Variant
from cxraug.core.config import ClassifyParams
from cxraug.data.datasets import Split
from cxraug.metrics.auc import per_class_auc
from cxraug.metrics.inference import two_level_interval


def run_groups(seeds: list[SeedResult]) -> np.ndarray | None:
    """The training unit of each run for the two-level bootstrap: its generator replicate (GAN variants),
    else None (every run its own unit)."""
    if all(s.generator_seed is None for s in seeds):
        return None
    return np.asarray([s.generator_seed for s in seeds])


def summarize(
    variant: Variant, settings: ClassifyParams, seeds: list[SeedResult], test: Split, run_id: str
) -> dict:
    """The metrics file: mean over runs of each run's test AUC, its SD over runs and the two-level
    (training runs x test patients, metrics/inference.py) interval; per run: AUCs and the training budget
    it used (steps, best step, images seen)."""
    classes = list(test.classes)
    scores = np.stack([s.test_scores for s in seeds])
    ci = two_level_interval(
        scores,
        test.labels.numpy(),
        test.patient_ids,
        run_groups(seeds),
        n_boot=settings.bootstrap,
        level=settings.ci_level,
    )
    per_run = {s.key: per_class_auc(s.test_scores, test.labels.numpy()) for s in seeds}
    return {
        "variant": variant.name,
        "network": network_label(settings),
        "classes": classes,
        "seeds": [s.seed for s in seeds],
        "runs": [s.key for s in seeds],
        "generator_seeds": sorted({s.generator_seed for s in seeds if s.generator_seed is not None}),
        "per_class_auc": dict(zip(classes, ci.estimate.round(5).tolist(), strict=True)),
        "per_class_auc_std": dict(zip(classes, ci.run_std[:-1].round(5).tolist(), strict=True)),
        "per_class_auc_ci": {
            c: [round(float(lo), 5), round(float(hi), 5)]
            for c, lo, hi in zip(classes, ci.lo, ci.hi, strict=True)
        },
        "macro_auc": round(ci.macro, 5),
        "macro_auc_std": round(float(ci.run_std[-1]), 5),
        "macro_auc_ci": [round(ci.macro_lo, 5), round(ci.macro_hi, 5)],
        "per_run_auc": {
            key: dict(zip(classes, auc.round(5).tolist(), strict=True)) for key, auc in per_run.items()
        },
        "budget": {
            "mode": settings.budget,
            **(
                {"steps": settings.steps, "eval_every": settings.eval_every}
                if settings.budget == "steps"
                else {}
            ),
            **({"epochs": settings.epochs} if settings.budget == "epochs" else {}),
            "patience": settings.patience,
        },
        "per_run": {
            s.key: {
                "classifier_seed": s.seed,
                "generator_seed": s.generator_seed,
                "steps": s.steps,
                "best_step": s.best_step,
                "best_round": s.best_epoch,
                "images_seen": s.images_seen,
                "best_val_macro_auc": round(s.best_val_macro_auc, 5),
            }
            for s in seeds
        },
        "train_images": seeds[0].train_counts,
        "extra_images_per_class": variant.n,
        "test_images": len(test),
        "test_patients": int(len(np.unique(test.patient_ids))),
        "bootstrap": {
            "resamples": ci.n_boot,
            "level": settings.ci_level,
            "unit": "training runs (clustered by generator seed) x test patients",
            "run_level": ci.run_level,
            "n_runs": ci.n_runs,
            "n_units": ci.n_units,
            "se_patients_macro": round(float(ci.se_patients[-1]), 6),
            "se_runs_macro": round(float(ci.se_runs[-1]), 6),
            "undefined_resamples": ci.undefined_resamples,
        },
        "mlflow_run_id": run_id,
    }
