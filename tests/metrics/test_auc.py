"""Per-class AUC, patient-level bootstrap CIs and the paired comparison, against known answers."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxraug.core.errors import CxraugError
from cxraug.metrics.auc import bootstrap_ci, macro_auc, paired_bootstrap, per_class_auc


def scored(n, n_classes=4, signal=1.0, seed=0, round_to=None):
    """Labels and softmax scores where the true class gets `signal` extra logit."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), labels] += signal
    scores = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return (np.round(scores, round_to) if round_to else scores), labels


@pytest.mark.parametrize("round_to", [None, 1])  # 1 decimal: many ties
def test_per_class_auc_equals_sklearn(round_to):
    scores, labels = scored(400, round_to=round_to)
    expected = [roc_auc_score(labels == k, scores[:, k]) for k in range(4)]
    np.testing.assert_allclose(per_class_auc(scores, labels), expected, rtol=0, atol=1e-12)
    assert macro_auc(scores, labels) == pytest.approx(np.mean(expected), abs=1e-12)


def test_seed_axis_gives_the_mean_of_the_seeds_aucs():
    a, labels = scored(300, seed=1)
    b, _ = scored(300, seed=2)
    b = b[:, np.random.default_rng(0).permutation(4)]  # different scores, same labels
    per_seed = [per_class_auc(s, labels) for s in (a, b)]
    np.testing.assert_allclose(per_class_auc(np.stack([a, b]), labels), np.mean(per_seed, 0), atol=1e-12)


def test_undefined_auc_is_a_clear_error():
    scores, labels = scored(50)
    labels[labels == 3] = 0
    with pytest.raises(CxraugError, match=r"class index\(es\) \[3\]"):
        per_class_auc(scores, labels)


def ci_width(result):
    return result.hi - result.lo


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_patients():
    small_scores, small_labels = scored(200, seed=3)
    large_scores, large_labels = scored(3200, seed=3)
    small = bootstrap_ci(small_scores, small_labels, np.arange(200), n_boot=1000)
    large = bootstrap_ci(large_scores, large_labels, np.arange(3200), n_boot=1000)
    for r in (small, large):
        assert np.all((r.lo <= r.estimate) & (r.estimate <= r.hi))
        assert r.macro_lo <= r.macro <= r.macro_hi
    # 16x the patients: the interval shrinks about 4x
    ratio = ci_width(large) / ci_width(small)
    assert np.all(ratio < 0.4) and np.all(ratio > 0.15)


def test_bootstrap_resamples_patients_not_images():
    scores, labels = scored(400, seed=4)
    twice = np.concatenate([scores, scores]), np.concatenate([labels, labels])
    original = bootstrap_ci(scores, labels, np.arange(400), n_boot=1500)
    # every patient has two identical images: they are one observation, the CI must not shrink ...
    same_patient = bootstrap_ci(*twice, np.tile(np.arange(400), 2), n_boot=1500)
    # ... as it would (by ~sqrt 2) if the copies were counted as independent images
    as_images = bootstrap_ci(*twice, np.arange(800), n_boot=1500)
    np.testing.assert_allclose(ci_width(same_patient), ci_width(original), rtol=0.2)
    assert np.all(ci_width(as_images) < 0.85 * ci_width(same_patient))


def test_std_over_seeds():
    a, labels = scored(300, seed=5)
    b, _ = scored(300, seed=6, signal=0.2)
    r = bootstrap_ci(np.stack([a, b]), labels, np.arange(300), n_boot=200)
    per_seed = np.stack([per_class_auc(a, labels), per_class_auc(b, labels)])
    np.testing.assert_allclose(r.std_over_seeds, per_seed.std(0, ddof=1))
    assert r.macro_std_over_seeds == pytest.approx(per_seed.mean(1).std(ddof=1))


def test_paired_bootstrap_finds_a_planted_difference():
    weak, labels = scored(600, signal=0.5, seed=7)
    rng = np.random.default_rng(8)
    strong = weak.copy()
    strong[np.arange(600), labels] += rng.uniform(0.05, 0.3, 600)  # the true class scores higher
    patients = np.arange(600) // 3
    c = paired_bootstrap(strong, weak, labels, patients, n_boot=1000)
    assert np.all(c.difference > 0)
    assert np.all(c.lo > 0) and np.all(c.p_value < 0.01)
    assert c.macro_lo > 0 and c.macro_p_value < 0.01
    reverse = paired_bootstrap(weak, strong, labels, patients, n_boot=1000)
    np.testing.assert_allclose(reverse.difference, -c.difference)


def test_paired_bootstrap_finds_nothing_between_identical_scores():
    scores, labels = scored(300, seed=9)
    c = paired_bootstrap(scores, scores.copy(), labels, np.arange(300) // 2, n_boot=500)
    np.testing.assert_array_equal(c.difference, 0)
    np.testing.assert_array_equal(c.lo, 0)
    np.testing.assert_array_equal(c.hi, 0)
    np.testing.assert_array_equal(c.p_value, 1)
    assert c.macro_p_value == 1


def test_paired_bootstrap_uses_the_same_resample_for_both():
    """Two variants that differ by a constant shift of all scores have identical AUCs on every resample:
    with a shared resample the difference is exactly zero everywhere, unpaired resampling would not be."""
    scores, labels = scored(300, seed=10)
    c = paired_bootstrap(scores, scores * 0.5 + 0.1, labels, np.arange(300), n_boot=300)
    np.testing.assert_allclose(c.lo, 0, atol=1e-12)
    np.testing.assert_allclose(c.hi, 0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_p_value_and_ci_never_disagree(seed):
    """p < 0.05 exactly when the 95% CI excludes zero, also for small, skewed, borderline differences."""
    weak, labels = scored(120, signal=0.8, seed=seed)
    rng = np.random.default_rng(100 + seed)
    other = weak.copy()
    other[np.arange(120), labels] += rng.normal(0.02, 0.08, 120)
    c = paired_bootstrap(other, weak, labels, np.arange(120) // 4, n_boot=400, seed=seed)
    excludes_zero = (c.lo > 0) | (c.hi < 0)
    np.testing.assert_array_equal(c.p_value < 0.05, excludes_zero)
    assert (c.macro_p_value < 0.05) == (c.macro_lo > 0 or c.macro_hi < 0)
