"""Per-class one-vs-rest AUC, weighted so that a patient bootstrap is one vectorised pass.

Intervals and comparisons live in metrics/inference.py (two-level: training runs x test patients; their
p-values agree with the intervals by construction, metrics/significance.py). The patient-only
`bootstrap_ci`/`paired_bootstrap` that were here resampled test patients alone, and their p-value (+1
correction) and np.quantile interval could disagree at the boundary; they are gone.

AUC of class k is one-vs-rest on the softmax scores: the probability that a random image of class k
scores higher (for class k) than a random image of another class, ties counting one half (the
Mann-Whitney statistic; identical to sklearn's `roc_auc_score`). It is computed with per-image weights,
so a bootstrap resample is a weight vector — how many times each image's PATIENT was drawn — and a
whole batch of resamples is one vectorised pass. Resampling patients, not images, keeps a patient's
images together, as they are not independent.

Scores may carry a seeds axis ([S, N, K]): the statistic is then the mean over seeds of each seed's AUC.
"""

from __future__ import annotations

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
