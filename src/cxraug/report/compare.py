"""The paired comparison of every variant with the baseline on the same test images."""

from __future__ import annotations

import numpy as np

from cxraug.core.config import ReportParams
from cxraug.core.errors import CxraugError
from cxraug.metrics.auc import paired_bootstrap
from cxraug.report.inputs import BASELINE, TestScores, VariantMetrics

SIGNIFICANCE = 0.05  # p-value below which a cell is marked † (paired bootstrap vs baseline)


def compare_to_baseline(
    scores: dict[str, TestScores], variants: list[str], params: ReportParams
) -> dict[str, dict]:
    """Paired patient-level bootstrap of AUC(variant) - AUC(baseline), per class and macro; variants or a
    baseline without scores are left out (the caller reports them missing)."""
    if BASELINE not in scores:
        return {}

    base = scores[BASELINE]
    results = {}
    for v in variants:
        if v == BASELINE or v not in scores:
            continue
        s = scores[v]
        if not (np.array_equal(s.image_index, base.image_index) and np.array_equal(s.labels, base.labels)):
            raise CxraugError(
                f"data/scores/{v}.npz and data/scores/{BASELINE}.npz scored different test images; "
                "rerun classify for both on the same data/prepared"
            )
        c = paired_bootstrap(
            s.scores, base.scores, base.labels, base.patient_ids, n_boot=params.n_bootstrap, seed=params.seed
        )
        results[v] = {
            "macro": _entry(c.macro_difference, c.macro_lo, c.macro_hi, c.macro_p_value),
            "per_class": {
                name: _entry(c.difference[k], c.lo[k], c.hi[k], c.p_value[k])
                for k, name in enumerate(base.classes)
            },
        }
    return results


def _entry(difference: float, lo: float, hi: float, p_value: float) -> dict:
    return {
        "difference": round(float(difference), 6),
        "ci_low": round(float(lo), 6),
        "ci_high": round(float(hi), 6),
        "p_value": round(float(p_value), 6),
    }


def _comparison_of(comparisons: dict[str, dict], variant: str, row: str) -> dict | None:
    c = comparisons.get(variant)
    if c is None:
        return None
    return c["macro"] if row == VariantMetrics.MACRO else c["per_class"].get(row)
