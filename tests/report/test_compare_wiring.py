"""The report's paired comparison (report/compare.py's `compare_table`, two-level: with one training run
per variant only the patient level is left) resamples PATIENTS: on a test split whose 50 patients have 6
alike images each, its interval and p-value match a plain paired patient bootstrap (resampling images gives an
interval ~0.4x as wide and a far smaller p-value)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from cxraug.core.config import ReportParams
from cxraug.report.compare import compare_table
from cxraug.report.inputs import TestScores as Scores  # (not collected as a test class)

K, PATIENTS, PER_PATIENT = 3, 50, 6


def rank_auc(positive, score):
    ranks = rankdata(score)
    n_pos = positive.sum()
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(score) - n_pos))


def softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def variant(strength: float, labels, patients, noise_seed: int) -> Scores:
    rng = np.random.default_rng(noise_seed)
    per_patient = rng.normal(size=(PATIENTS, K))
    logits = strength * np.eye(K)[labels] + np.repeat(per_patient, PER_PATIENT, axis=0)
    return Scores(
        scores=softmax(logits)[None],
        labels=labels,
        patient_ids=patients,
        image_index=np.array([f"{i}.png" for i in range(len(labels))]),
        classes=("A", "B", "C"),
    )


def test_paired_comparison_resamples_patients():
    labels = np.repeat(np.arange(PATIENTS) % K, PER_PATIENT)
    patients = np.repeat([f"p{i}" for i in range(PATIENTS)], PER_PATIENT)
    scores = {
        "baseline": variant(0.8, labels, patients, 0),
        "bagan_10": variant(1.2, labels, patients, 0),  # same per-patient noise: a paired difference
    }
    scores["bagan_10"] = Scores(
        scores["bagan_10"].scores + np.random.default_rng(5).normal(0, 0.05, scores["bagan_10"].scores.shape),
        labels,
        patients,
        scores["baseline"].image_index,
        scores["baseline"].classes,
    )
    rows = compare_table(10, scores, ReportParams(n_bootstrap=2000))
    got = next(r for r in rows if (r["a"], r["b"]) == ("bagan_10", "baseline"))

    a, b = scores["bagan_10"].scores[0], scores["baseline"].scores[0]
    rng = np.random.default_rng(7)
    ids = np.unique(patients)
    rows_of = {p: np.flatnonzero(patients == p) for p in ids}
    diffs = []
    while len(diffs) < 2000:
        rows = np.concatenate([rows_of[p] for p in rng.choice(ids, len(ids))])
        y = labels[rows]
        if len(np.unique(y)) < K:
            continue
        diffs.append(np.mean([rank_auc(y == k, a[rows, k]) - rank_auc(y == k, b[rows, k]) for k in range(K)]))
    diffs = np.array(diffs)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    p = min(1.0, 2 * (min((diffs <= 0).sum(), (diffs >= 0).sum()) + 1) / (len(diffs) + 1))

    macro = got["macro"]
    observed = np.mean([rank_auc(labels == k, a[:, k]) - rank_auc(labels == k, b[:, k]) for k in range(K)])
    assert macro["difference"] == pytest.approx(observed, abs=1e-5)
    assert macro["ci_high"] - macro["ci_low"] == pytest.approx(hi - lo, rel=0.2)
    assert macro["p_value"] == pytest.approx(p, abs=max(0.03, 0.3 * p))
