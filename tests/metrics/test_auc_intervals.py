"""The bootstrap intervals' exact promises: the level's percentiles of a patient bootstrap (against a plain
resampling loop), the seed-mean statistic, every resample accounted for, reproducible per seed, and the
p-value's formula on hand-made resampled differences."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from cxraug.metrics.auc import _two_sided_p, bootstrap_ci, paired_bootstrap, per_class_auc

N_PATIENTS, PER_PATIENT = 40, 3


def rank_auc(positive, score):
    ranks = rankdata(score)
    n_pos = positive.sum()
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(score) - n_pos))


@pytest.fixture(scope="module")
def data():
    """Two classes, 40 patients x 3 images, two seeds' scores."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(N_PATIENTS) % 2, PER_PATIENT)
    patients = np.repeat(np.arange(N_PATIENTS), PER_PATIENT)
    p1 = 1 / (1 + np.exp(-(labels + rng.normal(0, 1.2, (2, len(labels))))))
    scores = np.stack([1 - p1, p1], axis=-1)  # [S=2, N, K=2]
    return scores, labels, patients


def plain_bootstrap(statistic, labels, patients, n_boot, seed=11):
    rng = np.random.default_rng(seed)
    rows_of = [np.flatnonzero(patients == p) for p in range(N_PATIENTS)]
    out = []
    while len(out) < n_boot:
        rows = np.concatenate([rows_of[p] for p in rng.integers(0, N_PATIENTS, N_PATIENTS)])
        if 0 < labels[rows].sum() < len(rows):
            out.append(statistic(rows))
    return np.array(out)


def test_interval_is_the_levels_percentiles_of_the_seed_mean_patient_bootstrap(data, level=0.8):
    scores, labels, patients = data

    def seed_mean_auc(rows):  # class 1; class 0's AUC is the same on these two-class softmax scores
        return np.mean([rank_auc(labels[rows] == 1, s[rows, 1]) for s in scores])

    boots = plain_bootstrap(seed_mean_auc, labels, patients, 4000)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    ci = bootstrap_ci(scores, labels, patients, n_boot=4000, level=level, seed=0)
    assert ci.hi[1] - ci.lo[1] == pytest.approx(hi - lo, rel=0.07)
    assert ci.lo[1] == pytest.approx(lo, abs=0.01) and ci.hi[1] == pytest.approx(hi, abs=0.01)
    assert ci.estimate == pytest.approx(per_class_auc(scores, labels), abs=1e-12)
    assert ci.estimate.shape == (2,) and ci.lo.shape == (2,)


def test_every_requested_resample_is_counted_and_a_seed_reproduces_the_interval(data):
    scores, labels, patients = data
    ci = bootstrap_ci(scores, labels, patients, n_boot=301, seed=3)
    assert ci.n_boot + ci.undefined_resamples == 301 and ci.undefined_resamples == 0
    again = bootstrap_ci(scores, labels, patients, n_boot=301, seed=3)
    assert (again.lo == ci.lo).all() and (again.hi == ci.hi).all()
    c = paired_bootstrap(scores, scores[::-1], labels, patients, n_boot=301, seed=3)
    assert c.n_boot == 301
    with pytest.raises(ValueError, match="3 patient ids for 120 images"):
        bootstrap_ci(scores, labels, patients[:3], n_boot=10)
    with pytest.raises(ValueError, match="score sets differ"):
        paired_bootstrap(scores, scores[:, :10], labels, patients)


def test_one_seed_has_zero_spread_over_seeds(data):
    scores, labels, patients = data
    ci = bootstrap_ci(scores[0], labels, patients, n_boot=100)
    assert ci.std_over_seeds.tolist() == [0.0, 0.0] and ci.macro_std_over_seeds == 0.0
    two = bootstrap_ci(scores, labels, patients, n_boot=100)
    each = np.array([per_class_auc(s, labels) for s in scores])
    assert two.std_over_seeds == pytest.approx(each.std(0, ddof=1))
    assert two.macro_std_over_seeds == pytest.approx(each.mean(1).std(ddof=1))


def test_paired_interval_is_the_levels_percentiles_of_the_paired_patient_bootstrap(data):
    scores, labels, patients = data
    a, b = scores[0], scores[1]

    def difference(rows):
        return rank_auc(labels[rows] == 1, a[rows, 1]) - rank_auc(labels[rows] == 1, b[rows, 1])

    boots = plain_bootstrap(difference, labels, patients, 4000)
    lo, hi = np.quantile(boots, [0.1, 0.9])
    c = paired_bootstrap(a, b, labels, patients, n_boot=4000, level=0.8)
    observed = per_class_auc(a, labels) - per_class_auc(b, labels)
    assert c.difference == pytest.approx(observed, abs=1e-12)
    assert c.macro_difference == pytest.approx(observed.mean(), abs=1e-12)
    assert c.hi[1] - c.lo[1] == pytest.approx(hi - lo, rel=0.07)
    assert c.macro_hi - c.macro_lo == pytest.approx(hi - lo, rel=0.07)  # two classes: macro = class 1


def test_two_sided_p_by_hand():
    diffs = np.array([[-1.0], [1.0], [2.0], [3.0]])  # 1 at or below zero, 3 at or above
    assert _two_sided_p(diffs)[0] == pytest.approx(2 * (1 + 1) / 5)
    assert _two_sided_p(np.array([[0.5], [1.0], [2.0]]))[0] == pytest.approx(2 * 1 / 4)
    assert _two_sided_p(np.zeros((9, 2))).tolist() == [1.0, 1.0]  # capped at 1
    # per column: 4 below / 1 above zero, and 0 below / 5 above
    per_column = _two_sided_p(np.array([[-1.0, 1], [-2, 1], [-3, 1], [-4, 1], [1, 1]]))
    assert per_column.tolist() == pytest.approx([2 * 2 / 6, 2 * 1 / 6])


def test_shape_mistakes_name_the_shapes():
    labels = np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"scores must be \[N, K\] or \[seeds, N, K\], got shape \(4,\)"):
        per_class_auc(np.zeros(4), labels)
    with pytest.raises(ValueError, match="^5 scored images but 4 labels$"):
        per_class_auc(np.zeros((5, 2)), labels)
    with pytest.raises(
        Exception, match=r"need positive and negative images in the evaluated split \(prepare"
    ):
        per_class_auc(np.zeros((4, 3)), labels)
