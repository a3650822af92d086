"""Scoring tiny classifiers on external sets: saved scores, AUCs against sklearn, absent classes, CIs.

The VGG16s are the project's own at 1/16 width (same depth), untrained but seeded: their scores are
arbitrary and distinct, which is all an AUC check needs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from cxraug.classifier.external import (
    SeedModel,
    external_metrics,
    external_paths,
    load_seed_models,
    score_external,
    write_external_scores,
)
from cxraug.classifier.predict import load_classifier, save_classifier
from cxraug.core.errors import CxraugError
from cxraug.data.external import read_external
from cxraug.metrics.inference import two_level_interval
from cxraug.nets.vgg import build_vgg16
from tests.data.external_layouts import CLASSES, SIZE, build_folders, build_medmnist, build_nih

SEEDS = (3, 4)


def tiny_model(seed: int, classes=CLASSES, size: int = SIZE):
    torch.manual_seed(seed)
    model = build_vgg16(len(classes), image_size=size, width=1 / 16).eval()
    model.classes = tuple(classes)
    return model


@pytest.fixture(scope="module")
def models() -> list[SeedModel]:
    return [SeedModel(s, tiny_model(s)) for s in SEEDS]


def _build(kind: str, tmp_path):
    if kind == "nih":
        return build_nih(tmp_path / "ext")
    if kind == "folders":
        return build_folders(tmp_path / "ext")
    return build_medmnist(tmp_path / "ext" / "chestmnist_64.npz")


def _sklearn_auc(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    return float(np.mean([roc_auc_score(labels == k, s[:, k]) for s in scores]))


@pytest.mark.parametrize("kind", ["nih", "folders", "medmnist"])
def test_saved_scores_give_sklearns_auc_with_labels_from_the_layout(kind, tmp_path, models):
    layout = _build(kind, tmp_path)
    external = read_external(layout.path, CLASSES, SIZE)
    scores = score_external(models, external)
    assert scores.shape == (len(SEEDS), len(layout.expected), len(CLASSES)) and scores.dtype == np.float32
    metrics = external_metrics(scores, external, SEEDS, n_boot=200)
    scores_path, metrics_path = external_paths("holdout", "baseline")
    assert scores_path == Path("data/scores/external/holdout/baseline.npz")
    assert metrics_path == Path("metrics/external/holdout/baseline.json")
    scores_path = tmp_path / scores_path
    write_external_scores(scores_path, external, scores, SEEDS)

    saved = np.load(scores_path)
    assert list(saved["classes"]) == list(CLASSES) and list(saved["seeds"]) == list(SEEDS)
    labels = np.array([CLASSES.index(layout.expected[str(i)]) for i in saved["image_index"]])
    assert np.array_equal(saved["labels"], labels)
    assert ("patient_ids" in saved) == (kind == "nih")
    if kind == "nih":
        assert list(saved["patient_ids"]) == [layout.patients[str(i)] for i in saved["image_index"]]
    for k, name in enumerate(CLASSES):
        assert metrics["per_class_auc"][name] == pytest.approx(
            _sklearn_auc(saved["scores"], labels, k), abs=1e-5
        )
        lo, hi = metrics["per_class_auc_ci"][name]
        assert lo <= metrics["per_class_auc"][name] <= hi
        for s, seed in enumerate(SEEDS):
            one = roc_auc_score(labels == k, saved["scores"][s][:, k])
            assert metrics["per_seed_auc"][str(seed)][name] == pytest.approx(one, abs=1e-5)
    assert metrics["macro_auc"] == pytest.approx(
        np.mean([_sklearn_auc(saved["scores"], labels, k) for k in range(len(CLASSES))]), abs=1e-5
    )
    assert metrics["images_per_class"] == {c: int((labels == k).sum()) for k, c in enumerate(CLASSES)}
    assert metrics["skipped"] == external.skipped and metrics["pixels_md5"] == external.md5()
    assert metrics["bootstrap"]["unit"] == ("patient" if kind == "nih" else "image")
    assert metrics["absent_classes"] == [] and metrics["source"] == kind


def test_an_absent_class_has_an_undefined_auc_not_one_half(tmp_path, models):
    layout = build_folders(tmp_path / "ext", classes=CLASSES[:2])
    external = read_external(layout.path, CLASSES, SIZE)
    scores = score_external(models, external)
    metrics = external_metrics(scores, external, SEEDS, n_boot=200)
    json.dumps(metrics, allow_nan=False)  # valid JSON: undefined is null, not NaN
    assert metrics["per_class_auc"]["Nodule"] is None and metrics["per_class_auc_ci"]["Nodule"] is None
    assert all(metrics["per_seed_auc"][str(s)]["Nodule"] is None for s in SEEDS)
    assert metrics["absent_classes"] == ["Nodule"] and metrics["macro_over"] == list(CLASSES[:2])
    labels = np.array([CLASSES.index(layout.expected[str(i)]) for i in external.image_index])
    present = [_sklearn_auc(scores, labels, k) for k in (0, 1)]
    assert [metrics["per_class_auc"][c] for c in CLASSES[:2]] == pytest.approx(present, abs=1e-5)
    assert metrics["macro_auc"] == pytest.approx(np.mean(present), abs=1e-5)


def test_patients_drive_the_bootstrap_where_the_layout_has_them(tmp_path, models):
    nih = read_external(build_nih(tmp_path / "nih").path, CLASSES, SIZE)
    folders = read_external(build_folders(tmp_path / "folders").path, CLASSES, SIZE)
    for external, ids in ((nih, nih.patient_ids), (folders, np.arange(len(folders)).astype(str))):
        scores = score_external(models, external)
        metrics = external_metrics(scores, external, SEEDS, n_boot=300, bootstrap_seed=1)
        ci = two_level_interval(scores, external.labels, ids, n_boot=300, level=0.95, seed=1)
        assert metrics["macro_auc_ci"] == [round(ci.macro_lo, 5), round(ci.macro_hi, 5)]
    assert len(np.unique(nih.patient_ids)) < len(nih)  # patients with two images: the units differ
    per_image = two_level_interval(
        scores := score_external(models, nih), nih.labels, np.arange(len(nih)).astype(str), n_boot=300
    )
    by_patient = two_level_interval(scores, nih.labels, nih.patient_ids, n_boot=300)
    assert not np.allclose(per_image.lo, by_patient.lo)


def test_the_model_file_round_trips_every_seed(tmp_path, models):
    external = read_external(build_folders(tmp_path / "ext").path, CLASSES, SIZE)
    first, second = models
    path = save_classifier(
        first.model, tmp_path / "baseline.pt", CLASSES, [(second.seed, second.model.state_dict())], seed=3
    )
    loaded = load_seed_models(path)
    assert [m.seed for m in loaded] == list(SEEDS) and all(m.model.classes == CLASSES for m in loaded)
    assert np.array_equal(score_external(loaded, external), score_external(models, external))
    # the first seed is what load_classifier (gan_metrics, CAS) has always read
    assert np.array_equal(
        score_external([SeedModel(3, load_classifier(path))], external)[0],
        score_external(models[:1], external)[0],
    )
    # a file from before classify kept every seed: its one seed
    old = save_classifier(first.model, tmp_path / "old.pt", CLASSES, seed=3)
    assert [m.seed for m in load_seed_models(old)] == [3]
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CxraugError, match="not a classifier"):
        load_seed_models(tmp_path / "other.pt")


def test_a_model_for_other_classes_or_sizes_is_refused(tmp_path):
    external = read_external(build_folders(tmp_path / "ext").path, CLASSES, SIZE)
    with pytest.raises(CxraugError, match="predicts"):
        score_external([SeedModel(0, tiny_model(0, classes=CLASSES[::-1]))], external)
    with pytest.raises(CxraugError, match="64 px"):
        score_external([SeedModel(0, tiny_model(0, size=64))], external)
    with pytest.raises(CxraugError, match="plain name"):
        external_paths("../escape", "baseline")
