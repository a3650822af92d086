import numpy as np
import pytest

from cxraug.data.splits import split_by_patient

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _toy(seed: int, n_patients: int = 300):
    """Imbalanced labels, patients with 1-8 images that tend to share a label."""
    rng = np.random.default_rng(seed)
    labels, patients = [], []
    for p in range(n_patients):
        base = rng.choice(5, p=[0.7, 0.12, 0.07, 0.06, 0.05])
        for _ in range(rng.integers(1, 9)):
            labels.append(base if rng.random() < 0.7 else rng.choice(5, p=[0.7, 0.12, 0.07, 0.06, 0.05]))
            patients.append(f"p{p}")
    return np.array(labels), np.array(patients)


@pytest.mark.parametrize("seed", range(5))
def test_no_patient_in_two_splits_and_every_class_everywhere(seed):
    labels, patients = _toy(seed)
    split = split_by_patient(labels, patients, FRACTIONS, seed)
    for p in np.unique(patients):
        assert len(set(split[patients == p])) == 1
    for c in range(5):
        assert set(split[labels == c]) == {"train", "val", "test"}


@pytest.mark.parametrize("seed", range(3))
def test_each_class_is_split_close_to_the_fractions(seed):
    labels, patients = _toy(seed, n_patients=600)
    split = split_by_patient(labels, patients, FRACTIONS, seed)
    for c in range(5):
        of_class = split[labels == c]
        for name, share in FRACTIONS.items():
            assert abs(np.mean(of_class == name) - share) < 0.06, (c, name)


def test_same_seed_same_split_other_seed_other_split():
    labels, patients = _toy(0)
    a = split_by_patient(labels, patients, FRACTIONS, 1)
    assert (a == split_by_patient(labels, patients, FRACTIONS, 1)).all()
    assert (a != split_by_patient(labels, patients, FRACTIONS, 2)).any()


def test_a_patient_with_many_images_does_not_dominate_a_small_split():
    labels, patients = _toy(4, n_patients=150)
    labels = np.concatenate([labels, np.arange(60) % 5])  # one patient, 60 images of every class
    patients = np.concatenate([patients, np.full(60, "big")])
    split = split_by_patient(labels, patients, FRACTIONS, 0)
    assert set(split[patients == "big"]) == {"train"}
    for name in ("val", "test"):
        in_split = patients[split == name]
        assert np.unique(in_split, return_counts=True)[1].max() <= 0.1 * FRACTIONS[name] * len(labels)
