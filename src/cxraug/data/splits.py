"""Patient-level, class-stratified splitting: no patient ever appears in two splits."""

from __future__ import annotations

import numpy as np


def split_by_patient(
    labels: np.ndarray,
    patients: np.ndarray,
    fractions: dict[str, float],
    seed: int,
    max_patient_share: float = 0.1,
) -> np.ndarray:
    """Assign every image to a split so that all images of a patient share it.

    Greedy stratification: patients holding the rarest classes are placed first (larger ones first, the
    seed's permutation orders the rest), each into the split where it reduces the squared relative
    shortfall sum_c ((placed_c - target_c) / total_c)^2 the most (target = fraction x class total,
    fractions normalised to sum to 1), minus 1 for each of the patient's classes the split has none of
    yet: so every class reaches every split when it has enough patients. Ties go to the split named
    first. A patient holding more than `max_patient_share` of a split's expected images (and more than
    5) cannot join it: one patient with 46 follow-ups would otherwise be 40% of a small test set and
    decide its AUC. Patients too big for every split go to the largest one.
    Returns each image's split name.
    """
    names = list(fractions)
    if len(labels) == 0:
        return np.array([], dtype=str)
    share = np.array([fractions[n] for n in names], dtype=float)
    share = share / share.sum()
    uniq, patient_of = np.unique(patients, return_inverse=True)
    n_classes = int(labels.max()) + 1
    per_patient = np.zeros((len(uniq), n_classes))
    np.add.at(per_patient, (patient_of, labels), 1)
    class_total = per_patient.sum(0)
    target = share[:, None] * class_total[None, :]

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))
    # rarest class a patient has (its total), then larger patients first: hard-to-place ones go early
    rarest = np.where(per_patient > 0, class_total[None, :], np.inf).min(1)
    order = order[np.lexsort((-per_patient.sum(1)[order], rarest[order]))]

    size = per_patient.sum(1)
    limit = np.maximum(max_patient_share * target.sum(1), 5)  # tiny splits still take 5-image patients
    too_big = size[:, None] > limit[None, :]  # [patients, splits]
    too_big[too_big.all(1), int(np.argmax(share))] = False
    placed = np.zeros_like(target)
    split_of_patient = np.empty(len(uniq), dtype=int)
    weight = 1.0 / np.maximum(class_total, 1) ** 2
    for p in order:
        brings = per_patient[p][None, :]
        # change of sum_c w_c (placed - target)^2 if this patient joins each split
        cost = (weight[None, :] * brings * (2 * (placed - target) + brings)).sum(1)
        cost -= ((placed == 0) & (target > 0) & (brings > 0)).sum(1)  # a class this split has none of yet
        cost[too_big[p]] = np.inf
        s = int(np.argmin(cost))
        split_of_patient[p] = s
        placed[s] += per_patient[p]
    return np.array(names, dtype=object)[split_of_patient[patient_of]].astype(str)
