"""`cxraug bench study`: the projection of planned work x measured rates, checked against counts done by
hand from the params; and the verb end to end through the CLI with tiny nets."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cxraug.benchmarks import plan
from cxraug.core.config import Params
from tests.helpers import project_env

SIZES = plan.Sizes(train=1000, val=200, test=300)


def _params(**sections) -> Params:
    data = Params().model_dump()
    for section, values in sections.items():
        data[section] = {**data[section], **values} if isinstance(values, dict) else values
    return Params.model_validate(data)


def _rates(params: Params) -> dict[str, float]:
    return {key: 10.0 * (i + 1) for i, key in enumerate(plan.needed_rates(params))}  # all different


def _by_part(params: Params) -> dict[str, plan.Part]:
    parts = plan.project(plan.planned_work(params, SIZES), _rates(params))
    return {p.work.part: p for p in parts}


def test_projection_is_the_sum_of_its_parts_and_each_part_is_its_work_over_its_rate():
    params = Params()
    rates = _rates(params)
    parts = plan.project(plan.planned_work(params, SIZES), rates)
    assert plan.total(parts) == pytest.approx(sum(p.work.images / rates[p.work.rate] for p in parts))
    by = {p.work.part: p for p in parts}
    seeds = len(params.replicates.generator_seeds)  # 3

    # BAGAN's GAN phase by hand: seeds x epochs x (train // batch) steps x batch images
    b = params.train_bagan
    expected = seeds * b.epochs * (SIZES.train // b.batch_size) * b.batch_size
    assert by["train_bagan: gan"].seconds == pytest.approx(expected / rates["bagan:gan"])
    # classifiers on BAGAN images: 2 n x 3 generator seeds x 3 classifier seeds, each `steps` x batch
    c = params.classify
    runs = len(params.synthesize.n_per_class) * seeds * len(c.seeds)
    train_part = by["classify: bagan x 2 n (train)"]
    assert train_part.seconds == pytest.approx(runs * c.steps * c.batch_size / rates["classifier:train"])
    # ... and each run scores val every eval_every steps and test once
    scoring = runs * (c.steps // c.eval_every * SIZES.val + SIZES.test)
    assert by["classify: bagan x 2 n (val/test scoring)"].work.images == scoring
    # synthesis: max(n_per_class) kept per class and seed
    assert by["synthesize: diffusion"].work.images == seeds * 3000 * 5
    assert {p.work.rate for p in parts} == set(rates)  # every measured rate is used


def test_doubling_a_seed_list_doubles_exactly_the_parts_it_multiplies():
    base = _by_part(Params())
    more_gen = _by_part(_params(replicates={"generator_seeds": [0, 1, 2, 3, 4, 5]}))
    more_cls = _by_part(_params(classify={"seeds": [0, 1, 2, 3, 4, 5]}))
    for part, p in base.items():
        by_generator_seed = part.startswith(("train_", "synthesize", "gan_metrics")) or any(
            part.startswith(f"classify: {g} ") for g in Params().generators
        )
        assert more_gen[part].seconds == pytest.approx(p.seconds * (2 if by_generator_seed else 1)), part
        by_classifier_seed = part.startswith("classify")
        assert more_cls[part].seconds == pytest.approx(p.seconds * (2 if by_classifier_seed else 1)), part


def test_epochs_budget_counts_the_augmented_training_set_and_a_missing_rate_is_an_error():
    params = _params(classify={"budget": "epochs", "epochs": 7})
    by = _by_part(params)
    k = len(params.prepare.classes)
    expected = sum(7 * (SIZES.train + n * k) for n in params.synthesize.n_per_class) * len(
        params.classify.seeds
    )
    assert by["classify: standard_aug x 2 n (train)"].work.images == expected
    rates = _rates(params)
    del rates["sample:opengan"]
    with pytest.raises(Exception, match="sample:opengan"):
        plan.project(plan.planned_work(params, SIZES), rates)


def test_nih_sizes_follow_the_class_cap_and_the_fractions():
    full = plan.Sizes.nih(Params())
    assert full.train + full.val + full.test == sum(plan.NIH_COUNTS.values())
    capped = plan.Sizes.nih(_params(prepare={"max_per_class": 5000}))
    assert capped.train + capped.val + capped.test == 5000 + 4215 + 3955 + 2705 + 5000
    assert capped.val == round(0.15 * 20875)


@pytest.mark.slow
def test_bench_study_quick_runs_end_to_end_through_the_cli(tmp_path):
    overlay = tmp_path / "one.yaml"
    overlay.write_text("generators: [bagan]\n")
    out = subprocess.run(
        [sys.executable, "-m", "cxraug.cli", "bench", "study", "--quick", "--overlay", str(overlay)]
        + [
            "--train-images",
            "5000",
            "--val-images",
            "1000",
            "--test-images",
            "1000",
            "--out",
            str(tmp_path / "s.md"),
        ],
        capture_output=True,
        text=True,
        env=project_env(),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| **total** |" in out.stdout and "Projected `dvc repro`" in out.stdout
    data = json.loads((tmp_path / "s.json").read_text())
    assert set(data["rates"]) == {"embedder", "bagan:autoencoder", "bagan:gan", "sample:bagan"} | {
        "classifier:train",
        "classifier:predict",
    }
    assert all(r["images_per_second"] > 0 for r in data["rates"].values())
    assert data["total_seconds"] == pytest.approx(sum(p["seconds"] for p in data["parts"]))
    for p in data["parts"]:
        assert p["seconds"] == pytest.approx(p["images"] / data["rates"][p["rate"]]["images_per_second"])
