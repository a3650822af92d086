"""The report's Generators section: provenance of each GAN column and the share read as intended."""

import json

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxraug.core.config import TrainBaganParams, TrainOpenganParams
from cxraug.gans.bagan.train import recipe as bagan_recipe
from cxraug.gans.diffusion.nets import Architecture
from cxraug.gans.diffusion.proposer import Sampling, save_model
from cxraug.gans.opengan.architectures import recipe as opengan_recipe
from cxraug.report.generators import class_specificity, describe
from cxraug.report.reader import ImageReader
from cxraug.synthesis.files import read_provenance, write_provenance


def _images(rng, n, spot: bool) -> np.ndarray:
    """Noise, with a bright 4 px spot somewhere (class 1) or none (class 0)."""
    x = rng.integers(0, 60, (n, 32, 32)).astype(np.uint8)
    if spot:
        for image, (r, c) in zip(x, rng.integers(2, 26, (n, 2)), strict=True):
            image[r : r + 4, c : c + 4] += 150
    return x


def test_share_read_as_intended_counts_the_readers_verdict_per_class(tmp_path):
    rng = np.random.default_rng(0)
    real = np.concatenate([_images(rng, 60, False), _images(rng, 20, True)])  # class 1 rare
    reader = ImageReader(real, np.repeat([0, 1], [60, 20]), min_steps=60)
    # class 0: 10 right; class 1: 4 right, 6 that show class 0
    fakes = [(0, x) for x in _images(rng, 10, False)]
    fakes += [(1, x) for x in _images(rng, 4, True)] + [(1, x) for x in _images(rng, 6, False)]
    rows = []
    for i, (label, x) in enumerate(fakes):
        Image.fromarray(x, mode="L").save(tmp_path / f"{i:03d}.png")
        rows.append((f"{i:03d}.png", "ab"[label], label, 1.0))
    index = pd.DataFrame(rows, columns=["file", "class", "label", "score"])
    shares = class_specificity(reader, tmp_path, index, ("a", "b"), per_class=200)
    assert shares == {"a": 1.0, "b": 0.4, "overall": 14 / 20}
    assert class_specificity(reader, tmp_path, index, ("a", "b"), per_class=5)["b"] == 0.8  # first 5


def test_provenance_names_generator_consistency_and_filter(tmp_path):
    model, out = tmp_path / "model", tmp_path / "out"
    model.mkdir(), out.mkdir()
    (model / "recipe.json").write_text(json.dumps(opengan_recipe(TrainOpenganParams())))
    write_provenance(out, model, mode="none", threshold=0.0)
    text = describe(read_provenance(out))
    assert text == "generator residual; consistency 0.01 x mse; unfiltered"
    (model / "recipe.json").write_text(
        json.dumps(opengan_recipe(TrainOpenganParams(d_steps=2, ema_decay=0.99)))
    )
    write_provenance(out, model, mode="none", threshold=0.0)
    assert describe(read_provenance(out)) == (
        "generator residual; consistency 0.01 x mse; 2 D steps per G step; EMA 0.99 of G; unfiltered"
    )
    (model / "recipe.json").write_text(json.dumps(bagan_recipe(TrainBaganParams())))
    write_provenance(out, model, mode="threshold", threshold=0.5)
    assert describe(read_provenance(out)).endswith("filter: score >= 0.5")
    assert "class covariance" in describe(read_provenance(out))
    assert describe(read_provenance(tmp_path)).startswith("unknown")  # no provenance.json: said so


def test_a_diffusion_column_names_its_prediction_target_and_the_sampler_that_drew_it(tmp_path):
    model, out = tmp_path / "model", tmp_path / "out"
    arch = Architecture(8, 8, 2, (8,), 1, False, 1000, "squaredcos_cap_v2", prediction_type="v_prediction")
    save_model(model, torch.nn.Linear(1, 1), arch, ("a", "b"), Sampling("dpm_solver", 20, 2.0), [3, 4])
    out.mkdir()
    drawn = {"sampler": "ddim", "steps": 50, "guidance": 1.5}
    write_provenance(out, model, mode="none", threshold=0.0, sampler=drawn)
    text = describe(read_provenance(out))  # the sampler synthesize drew with, not the trained default
    assert text == "generator unet; predicts v_prediction; sampler ddim, 50 steps, guidance 1.5; unfiltered"
