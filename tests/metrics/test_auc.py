"""Per-class AUC, patient-level bootstrap CIs and the paired comparison, against known answers."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from cxraug.core.errors import CxraugError
from cxraug.metrics.auc import macro_auc, per_class_auc


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
