"""The patient-only bootstrap that cxraug used before issue 13 (metrics/auc.py's `bootstrap_ci` and
`paired_bootstrap`), kept here only as the reference the calibration tests show failing: it resamples
test patients and holds the training runs fixed. Not part of the package."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxraug.metrics.auc import _auc_table, _check, _with_seed_axis, patient_weights


@dataclass(frozen=True)
class Interval:
    """Per-class estimate with a bootstrap interval, and the same for the macro AUC."""

    estimate: np.ndarray  # [K]
    lo: np.ndarray
    hi: np.ndarray
    macro: float
    macro_lo: float
    macro_hi: float
    std_over_seeds: np.ndarray  # [K]; zeros with a single seed
    macro_std_over_seeds: float
    n_boot: int
    undefined_resamples: int  # resamples without a positive or negative of some class (left out)


def _resampled(patient_ids: np.ndarray, n_images: int, n_boot: int, seed: int, batch: int = 250):
    """Yield weight matrices [b, N] of n_boot patient resamples in all, in batches to bound memory."""
    if len(patient_ids) != n_images:
        raise ValueError(f"{len(patient_ids)} patient ids for {n_images} images")
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, batch):
        yield patient_weights(patient_ids, min(batch, n_boot - start), rng)


def bootstrap_ci(
    scores: np.ndarray,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of the (seed-mean) per-class and macro AUC under patient resampling."""
    scores = _with_seed_axis(scores)
    labels = np.asarray(labels, dtype=np.int64)
    _check(scores, labels)
    point = _auc_table(scores, labels, np.ones((1, len(labels))))[0]  # [S, K]
    boots = np.concatenate(
        [_auc_table(scores, labels, w).mean(1) for w in _resampled(patient_ids, len(labels), n_boot, seed)]
    )  # [B, K]
    valid = ~np.isnan(boots).any(1)
    boots = boots[valid]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    macro_lo, macro_hi = np.quantile(boots.mean(1), [alpha, 1 - alpha])
    seed_macro = point.mean(1)
    return Interval(
        estimate=point.mean(0),
        lo=lo,
        hi=hi,
        macro=float(point.mean()),
        macro_lo=float(macro_lo),
        macro_hi=float(macro_hi),
        std_over_seeds=point.std(0, ddof=1) if len(point) > 1 else np.zeros(point.shape[1]),
        macro_std_over_seeds=float(seed_macro.std(ddof=1)) if len(point) > 1 else 0.0,
        n_boot=int(valid.sum()),
        undefined_resamples=int((~valid).sum()),
    )


@dataclass(frozen=True)
class Comparison:
    """AUC(a) - AUC(b) per class and macro, its bootstrap interval and a two-sided p-value."""

    difference: np.ndarray  # [K]
    lo: np.ndarray
    hi: np.ndarray
    p_value: np.ndarray
    macro_difference: float
    macro_lo: float
    macro_hi: float
    macro_p_value: float
    n_boot: int


def _two_sided_p(boot_diffs: np.ndarray) -> np.ndarray:
    """Twice the smaller share of resampled differences on either side of zero (+1 correction, capped at
    1): the p-value of the percentile CI, so p < 1 - level exactly when that CI excludes zero and the
    two never disagree on a skewed bootstrap distribution. Identical score sets give p = 1."""
    below, above = (boot_diffs <= 0).sum(0), (boot_diffs >= 0).sum(0)
    return np.minimum(1.0, 2 * (np.minimum(below, above) + 1) / (len(boot_diffs) + 1))


def paired_bootstrap(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Compare two score sets on the SAME test images: each resample draws patients once and scores both
    variants on it, so the shared case mix cancels and only the variants' difference varies."""
    scores_a, scores_b = _with_seed_axis(scores_a), _with_seed_axis(scores_b)
    labels = np.asarray(labels, dtype=np.int64)
    if scores_a.shape[1:] != scores_b.shape[1:]:
        raise ValueError(f"score sets differ in images or classes: {scores_a.shape} vs {scores_b.shape}")
    _check(scores_a, labels)
    ones = np.ones((1, len(labels)))
    observed = _auc_table(scores_a, labels, ones)[0].mean(0) - _auc_table(scores_b, labels, ones)[0].mean(0)
    diffs = []
    for w in _resampled(patient_ids, len(labels), n_boot, seed):
        diffs.append(_auc_table(scores_a, labels, w).mean(1) - _auc_table(scores_b, labels, w).mean(1))
    boots = np.concatenate(diffs)
    boots = boots[~np.isnan(boots).any(1)]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    macro_boot, macro_observed = boots.mean(1), float(observed.mean())
    macro_lo, macro_hi = np.quantile(macro_boot, [alpha, 1 - alpha])
    return Comparison(
        difference=observed,
        lo=lo,
        hi=hi,
        p_value=_two_sided_p(boots),
        macro_difference=macro_observed,
        macro_lo=float(macro_lo),
        macro_hi=float(macro_hi),
        macro_p_value=float(_two_sided_p(macro_boot[:, None])[0]),
        n_boot=len(boots),
    )
