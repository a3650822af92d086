"""The gan_metrics stage's CAS trains on the synthetic images ONLY (no real training image), early-stops
on the real val split and reports the AUC of exactly the scores its classifier gave the real test split."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import roc_auc_score

import cxraug.classifier.cas as cas_module
from cxraug.data.datasets import load_split
from cxraug.stages import gan_metrics
from tests.stages.test_gan_metrics import project, stage_params  # noqa: F401  (the stage's fixture)


def test_cas_trains_on_the_synthetic_images_only(project, tracking_uri, monkeypatch):  # noqa: F811
    trained, predicted = [], []
    real_train, real_predict = cas_module.train_classifier, cas_module.predict_proba

    def spy_train(images, labels, val, *args, **kwargs):
        trained.append((images.clone(), labels.clone(), val))
        return real_train(images, labels, val, *args, **kwargs)

    def spy_predict(model, images, *args, **kwargs):
        scores = real_predict(model, images, *args, **kwargs)
        predicted.append((images, scores))
        return scores

    monkeypatch.setattr(cas_module, "train_classifier", spy_train)
    monkeypatch.setattr(cas_module, "predict_proba", spy_predict)
    monkeypatch.chdir(project)
    gan_metrics.run(stage_params(extractors=["embedder"]), gan_metrics.Paths("bagan"))

    train, val, test = (load_split(project / "data/prepared", s) for s in ("train", "val", "test"))
    index = pd.read_csv(project / "data/synthetic/bagan/seed0/index.csv")
    written = sorted(
        (int(row.label), np.asarray(Image.open(project / "data/synthetic/bagan/seed0" / row.file)).tobytes())
        for row in index.itertuples()
    )
    (images, labels, val_arg) = trained[0]
    assert len(trained) == 1  # one CAS seed in stage_params
    # exactly the written synthetic images with their labels: no real training image joins them
    passed = sorted((int(y), x.numpy().tobytes()) for x, y in zip(images, labels, strict=True))
    assert passed == written
    synthetic_labels = labels
    assert torch.equal(val_arg.images, val.images)
    (test_images, scores) = predicted[0]
    assert torch.equal(test_images, test.images)

    m = json.loads((project / "metrics/gan/bagan/seed0.json").read_text())["cas"]
    assert m["train_images"] == dict(
        zip(train.classes, torch.bincount(synthetic_labels, minlength=train.n_classes).tolist(), strict=True)
    )
    y = test.labels.numpy()
    for k, c in enumerate(train.classes):
        assert m["per_class_auc"][c] == pytest.approx(roc_auc_score(y == k, scores[:, k]), abs=1e-5)
    assert m["macro_auc"] == pytest.approx(
        np.mean([roc_auc_score(y == k, scores[:, k]) for k in range(train.n_classes)]), abs=1e-5
    )
