"""Which images a classify variant is trained and evaluated on: the prepared splits must agree, and a GAN
variant takes n synthetic images of every class from its replicate, or stops with a one-line error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cxraug.classifier.variants import parse_variant
from cxraug.core.errors import CxraugError
from cxraug.data.datasets import load_split
from cxraug.stages.classify import evaluation_splits, load_extra_synthetic
from tests.stages.test_classify import write_synthetic
from tests.stages.test_classify_wiring import CLASSES, write_split

BAGAN_4 = parse_variant("bagan_4", [4], ["bagan"])


@pytest.fixture
def prepared(tmp_path):
    for name, seed in (("train", 0), ("val", 1), ("test", 2)):
        write_split(tmp_path, name, 6, 2, seed)
    return tmp_path


@pytest.mark.parametrize("name", ["val", "test"])
def test_an_evaluation_split_unlike_train_is_a_one_line_error(prepared, name):
    assert [len(s) for s in evaluation_splits(prepared)] == [12, 12, 12]
    with np.load(prepared / f"{name}.npz") as z:
        arrays = dict(z)
    np.savez(prepared / f"{name}.npz", **(arrays | {"images": arrays["images"][:, :16, :16]}))  # size only
    with pytest.raises(CxraugError) as caught:
        evaluation_splits(prepared)
    assert (
        str(caught.value)
        == f"{prepared}/{name}.npz does not match train.npz (classes or size); rerun prepare"
    )


def test_a_gan_variant_takes_n_images_of_every_class_from_its_replicate(prepared, tmp_path):
    train = load_split(prepared, "train")
    write_synthetic(tmp_path / "syn" / "bagan" / "seed0", CLASSES, 6)
    images, labels = load_extra_synthetic(BAGAN_4, train, tmp_path / "syn")  # replicate 0 by default
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and images.shape == (12, 32, 32)
    assert bool((images == (77 + labels)[:, None, None].to(torch.uint8)).all())


def test_synthetic_sets_that_do_not_fit_are_one_line_errors(prepared, tmp_path):
    train = load_split(prepared, "train")
    directory = write_synthetic(tmp_path / "syn" / "bagan" / "seed2", CLASSES, 6)
    index = pd.read_csv(directory / "index.csv")
    index[index["label"] < 2].to_csv(directory / "index.csv", index=False)  # the last class is missing
    with pytest.raises(CxraugError) as caught:
        load_extra_synthetic(BAGAN_4, train, tmp_path / "syn", 2)
    assert str(caught.value) == (
        f"{directory}: bagan_4 needs 4 synthetic images of every class, got C (0); rerun synthesize@bagan-2"
    )
    index[index["label"] < 1].to_csv(directory / "index.csv", index=False)  # two classes missing
    with pytest.raises(CxraugError) as caught:
        load_extra_synthetic(BAGAN_4, train, tmp_path / "syn", 2)
    assert "got B (0), C (0); rerun" in str(caught.value)
    index.assign(label=index["label"].replace(1, 3)).to_csv(directory / "index.csv", index=False)
    with pytest.raises(CxraugError) as caught:
        load_extra_synthetic(BAGAN_4, train, tmp_path / "syn", 2)
    assert f"classes [('B', 3)] do not match the prepared classes {list(CLASSES)}" in str(caught.value)

    small = write_synthetic(tmp_path / "small" / "bagan" / "seed0", CLASSES, 4, size=16)
    with pytest.raises(CxraugError) as caught:
        load_extra_synthetic(BAGAN_4, train, tmp_path / "small")
    assert str(caught.value) == (
        f"{small}: synthetic images are (16, 16), prepared ones (32, 32); rerun synthesize after prepare"
    )
