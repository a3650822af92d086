"""A bootstrap resample is a weight vector: the weighted AUC must equal sklearn's AUC on the resample's
rows written out (each image repeated as often as its patient was drawn), positives AND negatives."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from cxraug.metrics.auc import patient_weights, weighted_auc


def test_weighted_auc_equals_sklearn_on_the_replicated_rows():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40) / 5  # many ties
    positive = rng.random(40) < 0.3
    weights = rng.integers(0, 4, (25, 40)).astype(float)  # zeros: images left out of a resample
    got = weighted_auc(scores, positive, weights)
    for b, w in enumerate(weights.astype(int)):
        rows = np.repeat(np.arange(40), w)
        assert np.isclose(got[b], roc_auc_score(positive[rows], scores[rows]), rtol=0, atol=1e-12)


def test_weighting_only_the_negatives_changes_the_auc():
    """Doubling the weight of the lowest-scored negative raises the AUC as sklearn says it does."""
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.9])
    positive = np.array([False, True, False, True, False, True])
    w = np.array([[2.0, 1, 1, 1, 1, 1]])
    rows = np.repeat(np.arange(6), w[0].astype(int))
    assert np.isclose(weighted_auc(scores, positive, w)[0], roc_auc_score(positive[rows], scores[rows]))
    assert weighted_auc(scores, positive, w)[0] > weighted_auc(scores, positive, np.ones((1, 6)))[0]


def test_patient_weights_count_each_patients_draws_on_all_its_images():
    patients = np.array(["a", "a", "b", "c", "c", "c"])
    w = patient_weights(patients, 500, np.random.default_rng(0))
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    # three patients drawn three times: the weights of one image per patient sum to 3
    assert (w[:, [0, 2, 3]].sum(1) == 3).all()
    assert abs(w[:, 2].mean() - 1) < 0.1  # each patient drawn once on average
