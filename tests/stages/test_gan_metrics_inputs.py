"""Which synthetic images gan_metrics evaluates and against what: the first n accepted images of each
class in acceptance order (a short class gives what it has) with their own labels, classify's settings
with the cas overrides, and the baseline's own figures on the same test images."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from cxraug.core.config import Params
from cxraug.core.errors import CxraugError
from cxraug.data.datasets import load_split
from cxraug.stages.gan_metrics import Paths, baseline_reference, cas_settings, load_evaluated_synthetic
from cxraug.synthesis.draw import synthesize
from cxraug.synthesis.files import write_synthetic
from tests.stages.test_classify_wiring import write_split
from tests.synthesis.test_synthesize import FakeProposer

CLASSES = ("No Finding", "Effusion", "Nodule")


@pytest.fixture
def written(tmp_path):
    # the third class passes rarely: fewer than 5 of the 12 wanted within the cap
    draws = synthesize(
        FakeProposer(ceilings=(1.0, 1.0, 0.7)), 12, 0.5, 1.0, 7, torch.Generator().manual_seed(0)
    )
    write_synthetic(draws, tmp_path / "syn")
    return tmp_path / "syn", draws


@pytest.mark.parametrize("per_class", [5, None])
def test_the_first_accepted_images_of_each_class_with_their_labels(written, per_class):
    directory, draws = written
    assert 0 < draws[2].accepted < 5  # a class short of per_class
    images, labels = load_evaluated_synthetic(directory, CLASSES, per_class, (8, 8))
    want = [d.images[:per_class] for d in draws]
    assert torch.equal(images, torch.cat(want))
    assert labels.dtype == torch.int64 and labels.tolist() == sum(
        ([c] * len(w) for c, w in enumerate(want)), []
    )
    assert bool((images[:, 0, 0] == labels.to(torch.uint8)).all())  # each image encodes its class


def test_mismatched_classes_or_sizes_are_one_line_errors(written):
    directory, _ = written
    with pytest.raises(CxraugError, match=r"classes \[\('Effusion', 1\)\] do not match the prepared classes"):
        load_evaluated_synthetic(directory, ("No Finding", "Mass", "Nodule"), 5, (8, 8))
    with pytest.raises(CxraugError) as caught:
        load_evaluated_synthetic(directory, CLASSES, 5, (16, 16))
    assert str(caught.value) == (
        f"{directory}: synthetic images are (8, 8), prepared ones (16, 16); rerun synthesize after prepare"
    )
    index = pd.read_csv(directory / "index.csv")
    index.iloc[0:0].to_csv(directory / "index.csv", index=False)
    with pytest.raises(CxraugError, match="no synthetic images to evaluate"):
        load_evaluated_synthetic(directory, CLASSES, 5, (8, 8))


def test_cas_settings_are_classifys_with_the_cas_overrides():
    base = Params()
    overridden = base.model_copy(
        update={
            "gan_metrics": base.gan_metrics.model_copy(
                update={
                    "cas": base.gan_metrics.cas.model_copy(
                        update={"seeds": [3, 4], "epochs": 7, "patience": 2}
                    ),
                    "device": "cpu",
                    "precision": "fp32",
                }
            ),
            "classify": base.classify.model_copy(update={"budget": "steps", "epochs": 40, "patience": 9}),
        }
    )
    s = cas_settings(overridden)
    assert (s.seeds, s.budget, s.epochs, s.patience, s.device, s.precision) == (
        [3, 4],
        "epochs",
        7,
        2,
        "cpu",
        "fp32",
    )
    assert s.width == overridden.classify.width  # everything else is classify's
    unset = overridden.model_copy(
        update={"gan_metrics": overridden.gan_metrics.model_copy(update={"cas": base.gan_metrics.cas})}
    )
    s = cas_settings(unset)
    assert (s.budget, s.epochs, s.patience) == ("steps", 40, 9)
    assert np.array_equal(s.seeds, base.gan_metrics.cas.seeds)


def test_the_baseline_reference_is_the_baselines_own_figures_on_the_same_test_images(tmp_path):
    write_split(tmp_path, "test", 5, 2, 0)
    test = load_split(tmp_path, "test")
    paths = replace(Paths(), baseline_metrics=tmp_path / "baseline.json", baseline_scores=tmp_path / "b.npz")
    assert baseline_reference(paths, test) == (None, None)  # no baseline yet: nothing to compare with
    figures = {
        "per_class_auc": {"A": 0.7},
        "per_class_auc_ci": {"A": [0.6, 0.8]},
        "macro_auc": 0.7,
        "macro_auc_ci": [0.6, 0.8],
        "seeds": [0],
    }
    paths.baseline_metrics.write_text(json.dumps(figures | {"epochs": 3}))
    scores = np.random.default_rng(0).random((10, 3))
    np.savez(paths.baseline_scores, scores=scores, image_index=np.asarray(test.image_index))
    metrics, got = baseline_reference(paths, test)
    assert metrics == figures and np.array_equal(got, scores)
    np.savez(paths.baseline_scores, scores=scores, image_index=np.asarray(test.image_index)[::-1])
    with pytest.raises(CxraugError) as caught:
        baseline_reference(paths, test)
    assert str(caught.value) == (
        f"{paths.baseline_scores} scored other test images than {paths.prepared}/test.npz; "
        "rerun `dvc repro classify_real@baseline`"
    )


def test_a_label_beyond_the_prepared_classes_is_a_one_line_error(written):
    directory, _ = written
    index = pd.read_csv(directory / "index.csv")
    index.assign(label=index["label"].replace(2, 3)).to_csv(directory / "index.csv", index=False)
    with pytest.raises(CxraugError, match=r"classes \[\('Nodule', 3\)\] do not match"):
        load_evaluated_synthetic(directory, CLASSES, 5, (8, 8))
