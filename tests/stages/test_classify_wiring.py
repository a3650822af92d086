"""The classify stage carries the test split's PATIENTS into its reported (two-level) intervals.

The fixture's test split has 60 patients with 4 images each; a patient's images share one label and one
score (as a patient's X-rays are alike), so resampling images instead of patients gives intervals about
half as wide. Training is replaced by scripted test scores (the stage's wiring is what is under test),
and the stage's CIs are checked against a plain patient bootstrap with sklearn's AUC."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

import cxraug.stages.classify as classify_module
from cxraug.classifier.seeds import SeedResult, run_key
from cxraug.core.config import ClassifyParams, Params
from cxraug.nets.vgg import VGG16
from cxraug.stages.classify import Paths

CLASSES = ("A", "B", "C")
PATIENTS, PER_PATIENT, SIZE = 60, 4, 32
SETTINGS = ClassifyParams(seeds=[0], epochs=1, width=1 / 16, bootstrap=2000, precision="fp32", device="cpu")


def write_split(directory: Path, name: str, n_patients: int, per_patient: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_patients) % len(CLASSES), per_patient)
    patients = np.repeat([f"{name}{p:03d}" for p in range(n_patients)], per_patient)
    np.savez(
        directory / f"{name}.npz",
        images=rng.integers(0, 256, (len(labels), SIZE, SIZE), dtype=np.uint8),
        labels=labels,
        patient_ids=patients,
        image_index=np.array([f"{p}_{i}.png" for i, p in enumerate(patients)]),
        classes=np.array(CLASSES),
    )


def patient_scores(n_patients: int, per_patient: int, seed: int = 0) -> np.ndarray:
    """Softmax of one-hot(label) + noise drawn per PATIENT: a patient's images score alike."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n_patients) % len(CLASSES)
    logits = 0.8 * np.eye(len(CLASSES))[labels] + rng.normal(size=(n_patients, len(CLASSES)))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return np.repeat(probs, per_patient, axis=0).astype(np.float32)


def rank_auc(positive: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUC from mid-ranks (ties count one half)."""
    ranks = rankdata(score)
    n_pos = positive.sum()
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(score) - n_pos))


def independent_patient_ci(scores, labels, patients, n_boot=2000, seed=123):
    """Percentile 95% interval of each class's AUC and of the macro AUC, resampling patients with
    replacement and replicating their rows (the rank AUC of the replicated rows)."""
    rng = np.random.default_rng(seed)
    ids = np.unique(patients)
    rows_of = {p: np.flatnonzero(patients == p) for p in ids}
    boots = []
    while len(boots) < n_boot:
        rows = np.concatenate([rows_of[p] for p in rng.choice(ids, len(ids))])
        y = labels[rows]
        if len(np.unique(y)) < len(CLASSES):
            continue
        boots.append([rank_auc(y == k, scores[rows, k]) for k in range(len(CLASSES))])
    boots = np.array(boots)
    per_class = np.quantile(boots, [0.025, 0.975], axis=0).T
    macro = np.quantile(boots.mean(1), [0.025, 0.975])
    return per_class, macro


@pytest.fixture
def project(tmp_path) -> Paths:
    paths = Paths().under(tmp_path)
    paths.prepared.mkdir(parents=True)
    write_split(paths.prepared, "train", 30, 2, 1)
    write_split(paths.prepared, "val", 15, 2, 2)
    write_split(paths.prepared, "test", PATIENTS, PER_PATIENT, 3)
    return paths


def test_stage_intervals_resample_patients(project, tracking_uri, monkeypatch):
    scores = patient_scores(PATIENTS, PER_PATIENT)
    state = VGG16(len(CLASSES), image_size=SIZE, width=SETTINGS.width).state_dict()

    def scripted_seed(variant, splits, params, seed, *args, generator_seed=None, **kwargs):
        key = run_key(seed, generator_seed)
        return SeedResult(seed, scores, 1, 0.5, [], {c: 60 for c in CLASSES}, state, key, generator_seed)

    monkeypatch.setattr(classify_module, "train_seed", scripted_seed)
    classify_module.run(Params(classify=SETTINGS), replace(project, variant="baseline"))
    metrics = json.loads((project.metrics / "baseline.json").read_text())

    test = np.load(project.prepared / "test.npz")
    labels, patients = test["labels"], test["patient_ids"]
    assert metrics["test_patients"] == PATIENTS and "test patients" in metrics["bootstrap"]["unit"]
    for k, c in enumerate(CLASSES):
        assert metrics["per_class_auc"][c] == pytest.approx(
            roc_auc_score(labels == k, scores[:, k]), abs=1e-5
        )

    per_class, macro = independent_patient_ci(scores, labels, patients)
    # resampling images instead gives ~0.5x these widths; the Monte Carlo error of a width is ~5%
    for k, c in enumerate(CLASSES):
        lo, hi = metrics["per_class_auc_ci"][c]
        assert hi - lo == pytest.approx(per_class[k, 1] - per_class[k, 0], rel=0.2), c
        assert lo == pytest.approx(per_class[k, 0], abs=0.03) and hi == pytest.approx(
            per_class[k, 1], abs=0.03
        )
    lo, hi = metrics["macro_auc_ci"]
    assert hi - lo == pytest.approx(macro[1] - macro[0], rel=0.2)


def npz_md5(path: Path) -> str:
    """md5 of the file's pixels then labels (int64), read straight from the npz."""
    import hashlib

    with np.load(path) as z:
        digest = hashlib.md5(np.ascontiguousarray(z["images"]).tobytes())
        digest.update(z["labels"].astype(np.int64).tobytes())
    return digest.hexdigest()


def test_every_variant_is_evaluated_on_the_prepared_val_and_test(project, tracking_uri, monkeypatch):
    """Each variant's training gets exactly data/prepared's val and test arrays, and its metrics name them
    by an md5 computed here from the files (not by the stage's loader)."""
    import torch

    scores = patient_scores(PATIENTS, PER_PATIENT)
    state = VGG16(len(CLASSES), image_size=SIZE, width=SETTINGS.width).state_dict()
    seen = {}

    def scripted_seed(variant, splits, params, seed, *args, generator_seed=None, **kwargs):
        seen[variant.name] = splits
        key = run_key(seed, generator_seed)
        return SeedResult(seed, scores, 1, 0.5, [], {c: 60 for c in CLASSES}, state, key, generator_seed)

    monkeypatch.setattr(classify_module, "train_seed", scripted_seed)
    params = Params(classify=SETTINGS.model_copy(update={"bootstrap": 100}))
    params = params.model_copy(
        update={"synthesize": params.synthesize.model_copy(update={"n_per_class": [4]})}
    )
    files = {s: np.load(project.prepared / f"{s}.npz") for s in ("val", "test")}
    for name in ("baseline", "standard_aug_4"):
        classify_module.run(params, replace(project, variant=name))
        _, val, test = seen[name]
        for split, arrays in ((val, files["val"]), (test, files["test"])):
            assert torch.equal(split.images, torch.from_numpy(arrays["images"]))
            assert split.labels.tolist() == arrays["labels"].tolist()
        metrics = json.loads((project.metrics / f"{name}.json").read_text())
        assert metrics["eval_sets"] == {s: npz_md5(project.prepared / f"{s}.npz") for s in ("val", "test")}
