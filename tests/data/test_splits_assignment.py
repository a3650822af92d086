"""The exact assignment `split_by_patient` makes, not only the promises it keeps.

Hand-computed cases, and a step-by-step replay of the documented greedy rule (plain loops in exact
arithmetic over the objective sum_c ((placed_c - target_c) / total_c)^2 before and after, not the
implementation's expanded difference) on fixtures with rare classes, one-image classes, tiny splits and
oversized patients.
"""

from fractions import Fraction

import numpy as np
import pytest

from cxraug.data.splits import split_by_patient


def replay(labels, patients, fractions, seed, max_patient_share=0.1):
    """Each patient's split under the docstring's rule, patient by patient, in exact arithmetic; and
    the closest call: the smallest margin between the chosen split and another whose cost could differ
    (the implementation works in floating point, so a fixture must not hinge on an exact tie)."""
    names = list(fractions)
    decimal = {n: Fraction(str(f)) for n, f in fractions.items()}  # 0.15 means 3/20
    share = [decimal[n] / sum(decimal.values()) for n in names]
    ids = sorted(set(patients.tolist()))
    classes = range(int(max(labels)) + 1)
    count = {p: [0] * len(classes) for p in ids}
    for label, p in zip(labels.tolist(), patients.tolist(), strict=True):
        count[p][label] += 1
    total = [sum(count[p][c] for p in ids) for c in classes]
    target = [[f * t for t in total] for f in share]
    limit = [max(Fraction(str(max_patient_share)) * f * len(labels), 5) for f in share]

    # the seed's permutation, then (rarest class total, larger first): `sorted` is stable
    shuffled = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    order = sorted(shuffled, key=lambda p: (min(total[c] for c in classes if count[p][c]), -sum(count[p])))

    placed = [[0] * len(classes) for _ in names]

    def objective(row, s):
        return sum(((row[c] - target[s][c]) / max(total[c], 1)) ** 2 for c in classes)

    def cost(p, s):
        after = [placed[s][c] + count[p][c] for c in classes]
        lacking = sum(1 for c in classes if count[p][c] and not placed[s][c] and target[s][c] > 0)
        return objective(after, s) - objective(placed[s], s) - lacking

    def state(p, s):  # what p's cost in s depends on: equal states tie exactly in floating point too
        return [(placed[s][c], target[s][c]) for c in classes if count[p][c]]

    split_of, closest = {}, float("inf")
    for p in order:
        fits = [s for s in range(len(names)) if sum(count[p]) <= limit[s]]
        fits = fits or [share.index(max(share))]
        costs = {s: cost(p, s) for s in fits}
        best = min(fits, key=lambda s: (costs[s], s))
        others = [costs[s] - costs[best] for s in fits if state(p, s) != state(p, best)]
        closest = min([closest, *others])
        split_of[p] = names[best]
        placed[best] = [placed[best][c] + count[p][c] for c in classes]
    return split_of, closest


def _awkward(seed: int):
    """Small and lopsided: a one-image class, a 3-image class, patients of 1-4 images, and patients of
    5, 6, 9 and 30 images (around and above the limits of a 150-image set)."""
    rng = np.random.default_rng(seed)
    labels, patients = [], []
    for p in range(45):
        for _ in range(rng.integers(1, 5)):
            labels.append(rng.choice(4, p=[0.6, 0.25, 0.1, 0.05]))
            patients.append(f"p{p:02d}")
    for name, size in (("big5", 5), ("big6", 6), ("big9", 9), ("huge", 30)):
        labels += rng.choice(4, size=size, p=[0.5, 0.3, 0.15, 0.05]).tolist()
        patients += [name] * size
    labels += [4, 5, 5, 5]  # class 4: one image; class 5: three, on two patients
    patients += [patients[0], "r1", "r1", "r2"]
    return np.array(labels), np.array(patients)


def _as_dict(split, patients):
    out = {}
    for s, p in zip(split.tolist(), patients.tolist(), strict=True):
        assert out.setdefault(p, s) == s
    return out


def test_hand_computed_assignment():
    # classes 0 (6 images) and 1 (3 images), 2/3 train: targets train (4, 2), test (2, 1); w = 1/36, 1/9
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0])
    patients = np.array(["A", "A", "B", "C", "C", "C", "D", "D", "E"])
    split = split_by_patient(labels, patients, {"train": 2 / 3, "test": 1 / 3}, seed=0)
    # A (two of the rare class) first: train -4/9 - 1 against test 0 - 1; B: train +1/9, test -1/9 - 1;
    # C: train -15/36 - 1, test -3/36 - 1; D: train 0, test -4/36 - 1; E: train -1/36, test +1/36
    assert _as_dict(split, patients) == {"A": "train", "B": "test", "C": "train", "D": "test", "E": "train"}


def test_the_missing_class_bonus_decides_by_hand():
    # classes 0, 1, 2 hold 3, 2, 1 images; 0.6 train: targets train (1.8, 1.2, 0.6), test (1.2, 0.8, 0.4),
    # weights 1/9, 1/4, 1. C (the one-image class 2) goes first, then A before B (larger).
    labels = np.array([0, 0, 1, 1, 0, 2])
    patients = np.array(["A", "A", "A", "B", "C", "C"])
    split = split_by_patient(labels, patients, {"train": 0.6, "test": 0.4}, seed=0)
    # C: train -2.6/9 - 0.2 - 2 against test -1.4/9 + 0.2 - 2.
    # A: the shortfall alone says train (+0.8/9 - 0.35 = -0.261 against -0.8/9 - 0.15 = -0.239), but
    #    test lacks both of A's classes and train one: train -1.261, test -2.239.
    # B: train -0.35 - 1 against test +0.35.
    assert _as_dict(split, patients) == {"C": "train", "A": "test", "B": "train"}


def test_the_shortfall_is_weighed_against_the_bonus_one_to_one():
    # classes 0, 1, 2 hold 1, 2, 3 images; 0.7 train: targets train (0.7, 1.4, 2.1), test (0.3, 0.6, 0.9),
    # weights 1, 1/4, 1/9. A first (the one-image class), then B (class 1: 2 images), then C.
    labels = np.array([0, 2, 1, 1, 2, 2])
    patients = np.array(["A", "A", "B", "B", "B", "C"])
    split = split_by_patient(labels, patients, {"train": 0.7, "test": 0.3}, seed=0)
    # A: train -34/45 - 2 against test +14/45 - 2.
    # B: train -8/15 - 1 (it has class 2 already) against test +14/45 - 2: test, by 7/45; a shortfall
    #    weighed twice (-16/15 - 1 against +28/45 - 2) or 1.5 times would say train.
    # C: train -2/15 against test +2/15.
    assert _as_dict(split, patients) == {"A": "train", "B": "test", "C": "train"}


def test_a_class_of_one_image_weighs_fully():
    # classes 0..3 hold 4, 1, 1, 1 images; 0.7 train: weights 1/16, 1, 1, 1. B (4 images) before A.
    labels = np.array([0, 2, 3, 0, 0, 0, 1])
    patients = np.array(["A", "A", "A", "B", "B", "B", "B"])
    split = split_by_patient(labels, patients, {"train": 0.7, "test": 0.3}, seed=0)
    # B: train -71/80 - 2 against test +41/80 - 2.
    # A: train -57/80 - 2 against test +57/80 - 3: train by 0.425; were a one-image class weighed as
    #    one of two images (1/4), train -9/80 - 2 against test +9/80 - 3: test.
    assert _as_dict(split, patients) == {"A": "train", "B": "train"}


def _replayed(labels, patients, fractions, seed, max_patient_share=None):
    limit = {} if max_patient_share is None else {"max_patient_share": max_patient_share}
    split = split_by_patient(labels, patients, fractions, seed, **limit)  # the default, when not given
    expected, closest = replay(labels, patients, fractions, seed, max_patient_share or 0.1)
    assert closest > 1e-6  # no step of this fixture hinges on rounding
    assert _as_dict(split, patients) == expected
    return split


@pytest.mark.parametrize("seed", range(4))
def test_assignment_equals_the_replayed_rule(seed):
    labels, patients = _awkward(seed)
    split = _replayed(labels, patients, {"val": 0.15, "train": 0.7, "test": 0.15}, seed)
    assert set(split[patients == "huge"]) == {"train"}  # too big for every split; the largest is named 2nd


@pytest.mark.parametrize("max_patient_share", [0.02, 0.3])
def test_assignment_equals_the_replayed_rule_at_other_limits(max_patient_share):
    labels, patients = _awkward(8)
    _replayed(labels, patients, {"train": 0.6, "val": 0.25, "test": 0.15}, 8, max_patient_share)


def test_a_split_of_fraction_zero_stays_empty():
    labels, patients = _awkward(2)
    split = _replayed(labels, patients, {"train": 0.8, "val": 0.2, "test": 0.0}, 2)
    assert "test" not in set(split)


def test_the_default_limit_keeps_a_six_image_patient_out_of_a_small_split():
    # 33 images, 0.2 val: val expects 6.6 images, so P (6 images) exceeds max(0.1 x 6.6, 5) there, and
    # train's max(0.1 x 26.4, 5) too: P goes to the largest split. Without the limit P would join val,
    # which has none of class 0 yet when P's turn comes (R, U to train; S, V to val before it).
    pats = {"R": [2] + [0] * 8, "S": [2], "P": [0] * 6, "U": [1, 1], "V": [1]}
    pats |= {f"q{i:02d}": [0] for i in range(14)}
    labels = np.array([c for p in pats.values() for c in p])
    patients = np.array([name for name, p in pats.items() for _ in p])
    split = _replayed(labels, patients, {"train": 0.8, "val": 0.2}, 0)
    assert set(split[patients == "P"]) == {"train"}


def test_fractions_are_normalised():
    labels, patients = _awkward(1)
    weights = split_by_patient(labels, patients, {"train": 70, "val": 15}, 0)  # prepare's train/val split
    assert (weights == split_by_patient(labels, patients, {"train": 70 / 85, "val": 15 / 85}, 0)).all()


def test_empty_input_gives_an_empty_split():
    split = split_by_patient(np.array([], dtype=int), np.array([], dtype=str), {"train": 1.0}, 0)
    assert split.shape == (0,) and split.dtype.kind == "U"  # split names, as for a non-empty input
