"""Classification accuracy score (CAS; Ravuri & Vinyals 2019): train a classifier on synthetic images
ONLY, early-stop it on the REAL validation split, and test it once on the REAL test split.

A generator whose images carry the class-specific evidence of the real ones gives a CAS close to the
real-data baseline; one that draws plausible but class-blind images gives chance (0.5 per-class AUC).
The training is `cxraug.classifier.train.train_classifier`, the same as every classify variant's, with
classify's settings and the overrides of `gan_metrics.cas`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cxraug.classifier.predict import predict_proba
from cxraug.classifier.train import EpochLog, train_classifier
from cxraug.core.config import ClassifyParams
from cxraug.data.datasets import Split
from cxraug.metrics.auc import per_class_auc
from cxraug.metrics.inference import two_level_comparison, two_level_interval


@dataclass(frozen=True)
class CasResult:
    classes: tuple[str, ...]
    seeds: list[int]
    scores: np.ndarray  # float32 [S, N_test, K] softmax on the real test split
    best_epoch: dict[str, int]
    train_images: dict[str, int]

    def summary(self, test: Split, params: ClassifyParams) -> dict:
        labels = test.labels.numpy()
        ci = two_level_interval(
            self.scores, labels, test.patient_ids, n_boot=params.bootstrap, level=params.ci_level
        )
        per_seed = [per_class_auc(s, labels) for s in self.scores]
        return {
            "seeds": self.seeds,
            "per_class_auc": dict(zip(self.classes, ci.estimate.round(5).tolist(), strict=True)),
            "per_class_auc_ci": {
                c: [round(float(lo), 5), round(float(hi), 5)]
                for c, lo, hi in zip(self.classes, ci.lo, ci.hi, strict=True)
            },
            "macro_auc": round(ci.macro, 5),
            "macro_auc_ci": [round(ci.macro_lo, 5), round(ci.macro_hi, 5)],
            "macro_auc_std": round(float(ci.run_std[-1]), 5),
            "per_seed_macro_auc": {
                str(s): round(float(a.mean()), 5) for s, a in zip(self.seeds, per_seed, strict=True)
            },
            "best_epoch": self.best_epoch,
            "train_images": self.train_images,
            "test_images": len(test),
            "bootstrap": {
                "resamples": ci.n_boot,
                "level": params.ci_level,
                "unit": "training runs x test patients (one run: patients only)",
                "undefined_resamples": ci.undefined_resamples,
            },
        }


def classification_accuracy_score(
    images: torch.Tensor,
    labels: torch.Tensor,
    val: Split,
    test: Split,
    params: ClassifyParams,
    *,
    on_epoch: Callable[[int, EpochLog], None] | None = None,
) -> CasResult:
    """Train on (images, labels) — synthetic only — once per seed of `params.seeds`; score the test split
    once per seed with the best-val weights."""
    counts = torch.bincount(labels, minlength=val.n_classes).tolist()
    scores, best_epoch = [], {}
    for seed in params.seeds:
        trained = train_classifier(
            images,
            labels,
            val,
            params,
            seed,
            on_epoch=(lambda log, seed=seed: on_epoch(seed, log)) if on_epoch else None,
        )
        scores.append(predict_proba(trained.model, test.images, trained.precision, params.eval_batch_size))
        best_epoch[str(seed)] = trained.best_epoch
    return CasResult(
        classes=val.classes,
        seeds=list(params.seeds),
        scores=np.stack(scores).astype(np.float32),
        best_epoch=best_epoch,
        train_images=dict(zip(val.classes, counts, strict=True)),
    )


def compare_with_baseline(
    cas_scores: np.ndarray, baseline_scores: np.ndarray, test: Split, n_boot: int, level: float
) -> dict:
    """AUC(CAS) - AUC(real-data baseline) on the same test patients: the two-level paired comparison
    (metrics/inference.py; the two classifiers were trained independently)."""
    c = two_level_comparison(
        cas_scores, baseline_scores, test.labels.numpy(), test.patient_ids, n_boot=n_boot, level=level
    )

    def entry(difference, lo, hi, p) -> dict:
        return {
            "difference": round(float(difference), 5),
            "ci": [round(float(lo), 5), round(float(hi), 5)],
            "p_value": round(float(p), 5),
        }

    return {
        "macro": entry(c.macro_difference, c.macro_lo, c.macro_hi, c.macro_p_value),
        "per_class": {
            name: entry(c.difference[k], c.lo[k], c.hi[k], c.p_value[k])
            for k, name in enumerate(test.classes)
        },
    }
