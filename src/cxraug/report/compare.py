"""Every comparison the study is about, per table (n images per class), with two-level intervals and
p-values adjusted across the table.

For a table with n: each generator variant <gan>_n vs `baseline`, vs `standard_aug_n` (the same number of
extra images, made by classic transforms) and vs every other generator at the same n; standard_aug_n and
the cheap rebalancing (weighted_loss, oversample) vs `baseline`. Each comparison is
`metrics.inference.two_level_comparison`: one patient resample applied to both variants, training runs
(clustered by generator seed for GAN variants) drawn independently for each, so its interval covers the
test sample AND the training randomness; the p-value is read off the same draws, so p < 0.05 exactly
when the 95% interval excludes 0. The family a table's p-values are adjusted over is every cell of that
table's comparisons (classes and macro): `report.adjust`, Holm by default (docs/report.md says why).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import combinations

import numpy as np

from cxraug.core.config import ReportParams
from cxraug.core.errors import CxraugError
from cxraug.metrics.inference import adjust, two_level_comparison
from cxraug.metrics.significance import resolution
from cxraug.report.inputs import BASELINE, TestScores, VariantMetrics, study_generators

log = logging.getLogger(__name__)

SIGNIFICANCE = 0.05  # ADJUSTED p-value below which a cell is marked †


def planned_pairs(n: int, generators: Sequence[str] | None = None) -> list[tuple[str, str, str]]:
    """(a, b, what) of the table for n: a - b is estimated (`generators`: the study's, None = all)."""
    gans = [f"{g}_{n}" for g in study_generators(generators)]
    pairs = [(g, BASELINE, "vs baseline") for g in gans]
    pairs += [(g, f"standard_aug_{n}", "vs standard aug, same n") for g in gans]
    pairs += [(a, b, "generator vs generator, same n") for a, b in combinations(gans, 2)]
    pairs += [(v, BASELINE, "vs baseline") for v in (f"standard_aug_{n}", "weighted_loss", "oversample")]
    return pairs


def _entry(difference: float, lo: float, hi: float, p_value: float) -> dict:
    return {
        "difference": round(float(difference), 6),
        "ci_low": round(float(lo), 6),
        "ci_high": round(float(hi), 6),
        "p_value": round(float(p_value), 6),
    }


def _compare(
    a: TestScores,
    b: TestScores,
    names: tuple[str, str],
    params: ReportParams,
    level: float,
    paired_runs: bool = False,
):
    if not (np.array_equal(a.image_index, b.image_index) and np.array_equal(a.labels, b.labels)):
        raise CxraugError(
            f"data/scores/{names[0]}.npz and data/scores/{names[1]}.npz scored different test images; "
            "rerun classify for both on the same data/prepared"
        )
    return two_level_comparison(
        a.scores,
        b.scores,
        b.labels,
        b.patient_ids,
        run_groups_a=a.run_groups,
        run_groups_b=b.run_groups,
        paired_runs=paired_runs,
        n_boot=params.n_bootstrap,
        level=level,
        seed=params.seed,
    )


def compare_table(
    n: int,
    scores: dict[str, TestScores],
    params: ReportParams,
    level: float = 0.95,
    generators: Sequence[str] | None = None,
) -> list[dict]:
    """The table's comparisons (those whose two variants have scores), with p adjusted over all its cells."""
    return compare_pairs(planned_pairs(n, generators), scores, params, level)


def compare_pairs(
    pairs: list[tuple[str, str, str]],
    scores: dict[str, TestScores],
    params: ReportParams,
    level: float = 0.95,
    paired_runs: bool = False,
) -> list[dict]:
    """Each (a, b, what) whose two variants have scores, as a row of `compare.json`; the p-values are
    adjusted over every cell (classes and macro) of these rows: one family. paired_runs: equal run groups
    of a and b are the same training unit (metrics.inference.two_level_comparison)."""
    rows = []
    for a, b, what in pairs:
        if a not in scores or b not in scores:
            continue
        c = _compare(scores[a], scores[b], (a, b), params, level, paired_runs)
        classes = scores[b].classes
        rows.append(
            {
                "a": a,
                "b": b,
                "comparison": what,
                "runs": [
                    int(np.prod(scores[a].scores.shape[:-2])),
                    int(np.prod(scores[b].scores.shape[:-2])),
                ],
                "units": list(c.n_units),
                "macro": _entry(c.macro_difference, c.macro_lo, c.macro_hi, c.macro_p_value),
                "per_class": {
                    name: _entry(c.difference[k], c.lo[k], c.hi[k], c.p_value[k])
                    for k, name in enumerate(classes)
                },
            }
        )
    cells = [cell for r in rows for cell in (r["macro"], *r["per_class"].values())]
    floor = resolution(params.n_bootstrap)
    if cells and len(cells) * floor >= SIGNIFICANCE:
        log.warning(
            "%d cells and %d bootstrap draws: Holm can mark no cell (needs n_bootstrap > %d)",
            len(cells), params.n_bootstrap, round(2 * len(cells) / SIGNIFICANCE),
        )  # fmt: skip
    for r in rows:
        r["p_resolution"] = floor  # p 0 means p < this
    for cell, p in zip(cells, adjust([c["p_value"] for c in cells], params.adjust, floor), strict=True):
        cell["p_adjusted"] = round(float(p), 6)
        cell["significant"] = bool(p < SIGNIFICANCE)
    return rows


def comparison_of(rows: list[dict], a: str, b: str, row: str) -> dict | None:
    for r in rows:
        if (r["a"], r["b"]) == (a, b):
            return r["macro"] if row == VariantMetrics.MACRO else r["per_class"].get(row)
    return None
