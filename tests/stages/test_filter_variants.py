"""The filter-sensitivity variants <gan>_<n>_<mode> (classify_filter@<mode>): parsed from filter_sensitivity,
read data/synthetic/<gan>-filter-<mode>, and train on what the filter passed when a class fell short (down
to none), counting the images used per generator replicate."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from cxraug.classifier.variants import build_training_set, filter_variants, parse_variant, valid_variants
from cxraug.core.config import FilterSensitivityParams, Params, ReplicatesParams, SynthesizeParams
from cxraug.core.errors import CxraugError
from cxraug.data.datasets import load_split
from cxraug.gans.registry import names
from cxraug.stages import classify as classify_module
from cxraug.stages.classify import Paths, load_extra_synthetic
from tests.stages.test_classify import SYNTHETIC_VALUE, TINY, prepared, write_synthetic  # noqa: F401

GANS = names()
ROW = FilterSensitivityParams(gan="bagan", n_per_class=6, modes=["none", "argmax"])


def test_filter_variants_are_parsed_from_filter_sensitivity():
    assert filter_variants(ROW) == ["bagan_6_none", "bagan_6_argmax"]
    assert valid_variants([4], GANS, ROW)[-2:] == ["bagan_6_none", "bagan_6_argmax"]
    v = parse_variant("bagan_6_argmax", [4], GANS, ROW)
    assert (v.kind, v.n, v.gan, v.filter, v.source) == ("bagan", 6, "bagan", "argmax", "bagan-filter-argmax")
    assert classify_module.stage_name(v) == "classify_filter@argmax"
    plain = parse_variant("bagan_4", [4], GANS, ROW)
    assert plain.filter is None and plain.source == "bagan"
    for bad in ("bagan_6_threshold", "bagan_5_none", "opengan_6_none"):  # not a mode / n / gan of the row
        with pytest.raises(CxraugError, match="unknown variant"):
            parse_variant(bad, [4], GANS, ROW)
    with pytest.raises(CxraugError, match="unknown variant"):  # without the row there are none
        parse_variant("bagan_6_none", [4], GANS)


def _sets(paths: Paths, classes, counts_by_seed: dict[int, list[int]]) -> None:
    """data/synthetic/bagan-filter-argmax/seed<g> holding counts[c] images of class c (prefix of 6)."""
    import pandas as pd

    for g, counts in counts_by_seed.items():
        directory = write_synthetic(paths.synthetic / "bagan-filter-argmax" / f"seed{g}", classes, 6)
        index = pd.read_csv(directory / "index.csv")
        keep = index.groupby("label").cumcount() < index["label"].map(dict(enumerate(counts)))
        index[keep].to_csv(directory / "index.csv", index=False)


def test_a_short_filter_set_trains_on_what_passed(tmp_path, prepared):  # noqa: F811
    paths = replace(Paths().under(tmp_path), prepared=prepared)
    train = load_split(prepared, "train")
    counts = [6, 2, 0, 6, 1][: train.n_classes]
    _sets(paths, train.classes, {0: counts})
    variant = parse_variant("bagan_6_argmax", [4], GANS, ROW)
    images, labels = load_extra_synthetic(variant, train, paths.synthetic, 0)
    assert torch.bincount(labels, minlength=train.n_classes).tolist() == counts
    built = build_training_set(variant, train, TINY, 0, (images, labels))
    extra = built.images[len(train) :]
    assert len(extra) == sum(counts)
    assert torch.equal(extra.flatten(1)[:, 0].long() - SYNTHETIC_VALUE, built.labels[len(train) :])

    _sets(paths, train.classes, {1: [0] * train.n_classes})  # the filter kept nothing at all
    images, labels = load_extra_synthetic(variant, train, paths.synthetic, 1)
    assert images.shape == (0, *train.images.shape[1:]) and len(labels) == 0
    assert torch.equal(build_training_set(variant, train, TINY, 0, (images, labels)).images, train.images)

    plain = parse_variant("bagan_6", [6], GANS)  # the study's variants still refuse a shortfall
    write_synthetic(paths.synthetic / "bagan" / "seed0", train.classes, 2)
    with pytest.raises(CxraugError, match="6 are needed"):
        load_extra_synthetic(plain, train, paths.synthetic, 0)


def test_classify_filter_records_the_images_each_replicate_trained_on(tmp_path, prepared, tracking_uri):  # noqa: F811
    paths = replace(Paths(variant="bagan_6_argmax").under(tmp_path), prepared=prepared)
    train = load_split(prepared, "train")
    k = train.n_classes
    by_seed = {0: [6] * k, 1: [6, 0, *([3] * (k - 2))]}
    _sets(paths, train.classes, by_seed)
    params = Params(
        replicates=ReplicatesParams(generator_seeds=[0, 1]),
        synthesize=SynthesizeParams(n_per_class=[4]),
        classify=TINY.model_copy(update={"budget": "steps", "steps": 4, "eval_every": 2}),
        filter_sensitivity=ROW,
    )
    result = classify_module.run(params, paths)
    assert result.stage == "classify_filter@argmax"
    metrics = json.loads((paths.metrics / "bagan_6_argmax.json").read_text())
    assert metrics["synthetic_images"] == {
        f"seed{g}": dict(zip(train.classes, c, strict=True)) for g, c in by_seed.items()
    }
    assert sorted(metrics["per_run"]) == ["g0s0", "g1s0"]  # the full cross, as classify_gan
    assert all(r["steps"] == 4 for r in metrics["per_run"].values())  # the same step budget
