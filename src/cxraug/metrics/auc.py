"""Per-class AUC with patient-level bootstrap confidence intervals, and a paired comparison of two variants.

AUC of class k is one-vs-rest on the softmax scores: the probability that a random image of class k
scores higher (for class k) than a random image of another class, ties counting one half (the
Mann-Whitney statistic; identical to sklearn's `roc_auc_score`). It is computed with per-image weights,
so a bootstrap resample is a weight vector — how many times each image's PATIENT was drawn — and a
whole batch of resamples is one vectorised pass. Resampling patients, not images, keeps a patient's
images together, as they are not independent.

Scores may carry a seeds axis ([S, N, K]): the statistic is then the mean over seeds of each seed's AUC,
and every resample uses the same patients for all seeds (and, in `paired_bootstrap`, for both variants).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxraug.core.errors import CxraugError


def _with_seed_axis(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 2:
        return scores[None]
    if scores.ndim != 3:
        raise ValueError(f"scores must be [N, K] or [seeds, N, K], got shape {scores.shape}")
    return scores


def weighted_auc(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUC of one score column for many weightings at once.

    scores [N], positive bool [N], weights [B, N] (non-negative) -> AUC [B]; NaN where a weighting leaves
    no positive or no negative weight. AUC = sum_i in pos w_i (W_neg below s_i + W_neg tied with s_i / 2)
    / (W_pos W_neg)."""
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    w = np.atleast_2d(weights)[:, order]
    pos = positive[order]
    w_pos, w_neg = w * pos, w * ~pos
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])  # tie groups
    pos_g = np.add.reduceat(w_pos, starts, axis=1)
    neg_g = np.add.reduceat(w_neg, starts, axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    total_pos, total_neg = pos_g.sum(1), neg_g.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_g * (neg_below + 0.5 * neg_g)).sum(1) / (total_pos * total_neg)
    return np.where((total_pos > 0) & (total_neg > 0), auc, np.nan)


def _auc_table(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[S, N, K] scores, weights [B, N] -> AUC [B, S, K]."""
    n_seeds, _, n_classes = scores.shape
    out = np.empty((weights.shape[0], n_seeds, n_classes))
    for s in range(n_seeds):
        for k in range(n_classes):
            out[:, s, k] = weighted_auc(scores[s, :, k], labels == k, weights)
    return out


def _check(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.shape[1] != len(labels):
        raise ValueError(f"{scores.shape[1]} scored images but {len(labels)} labels")
    counts = np.bincount(labels, minlength=scores.shape[2])
    missing = np.flatnonzero((counts == 0) | (counts == len(labels)))
    if missing.size:
        raise CxraugError(
            f"AUC undefined for class index(es) {missing.tolist()}: they need positive and negative "
            "images in the evaluated split (prepare puts every class in every split)"
        )


def per_class_auc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One-vs-rest AUC per class from scores [N, K] (or the seed mean of it from [S, N, K]) -> [K]."""
    scores = _with_seed_axis(scores)
    labels = np.asarray(labels, dtype=np.int64)
    _check(scores, labels)
    return _auc_table(scores, labels, np.ones((1, len(labels))))[0].mean(0)


def macro_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Unweighted mean of the per-class AUCs (every class counts the same, however rare)."""
    return float(per_class_auc(scores, labels).mean())


def patient_weights(patient_ids: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """[n_boot, N]: how often each image's patient was drawn when resampling patients with replacement."""
    _, patient_of_image = np.unique(np.asarray(patient_ids).astype(str), return_inverse=True)
    n_patients = patient_of_image.max() + 1
    draws = rng.multinomial(n_patients, np.full(n_patients, 1.0 / n_patients), size=n_boot)
    return draws[:, patient_of_image].astype(np.float64)


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
