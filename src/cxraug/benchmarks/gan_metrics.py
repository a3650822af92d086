"""Throughput of the gan_metrics stage's parts: feature extraction through torch-fidelity with our
extractors (untrained nets of the default widths: the cost does not depend on the weights), the
torch-fidelity figures on extracted features, and the memorisation audit's nearest-neighbour search
(chunked matmul, beside torch.cdist on the whole matrix as the reference)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from cxraug.benchmarks.common import Measurement, measure
from cxraug.classifier.predict import save_classifier
from cxraug.gans.opengan.embedder import Embedder, save_embedder
from cxraug.metrics import fidelity, memorisation
from cxraug.nets.vgg import build_vgg16


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    coarse = torch.rand(n, 1, size // 8, size // 8, generator=torch.Generator().manual_seed(seed))
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return (smooth[:, 0] * 255).to(torch.uint8)


def bench_gan_metrics(n_synthetic: int, n_real: int, size: int, vgg_width: float) -> list[Measurement]:

    synthetic, real = _images(n_synthetic, size, 0), _images(n_real, size, 1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        embedder_path, classifier_path = Path(tmp) / "embedder.pt", Path(tmp) / "classifier.pt"
        save_embedder(Embedder(size), embedder_path, ("a", "b"), [])
        save_classifier(build_vgg16(5, image_size=size, width=vgg_width), classifier_path, tuple("abcde"))
        for name, path in (("embedder", embedder_path), ("classifier", classifier_path)):
            rows.append(
                measure(
                    f"features: {name} via torch-fidelity ({size} px)",
                    lambda name=name, path=path: fidelity.extract_features(synthetic, name, path),
                    n_synthetic,
                    warmup=1,
                    repeats=3,
                )
            )
        f_synth = fidelity.extract_features(synthetic, "embedder", embedder_path)
        f_real = fidelity.extract_features(real, "embedder", embedder_path)
    rows.append(
        measure(
            f"FD + KID (100 subsets) + precision/recall, {f_synth.shape[1]}-d features",
            lambda: fidelity.fidelity_scores(
                f_synth,
                f_real,
                kid_subsets=100,
                kid_subset_size=1000,
                pr_neighbourhood=3,
                min_images=10,
                seed=0,
            ),
            n_synthetic,
            warmup=0,
            repeats=3,
        )
    )
    rows.append(
        measure(
            f"audit: nearest real image in pixels, chunked matmul ({n_real:,} real)",
            lambda: memorisation.nearest_pixels(synthetic, real),
            n_synthetic,
            warmup=0,
            repeats=3,
        )
    )
    rows.append(
        measure(
            "   reference: torch.cdist on the whole matrix",
            lambda: torch.cdist(memorisation.pixels(synthetic), memorisation.pixels(real)).min(1),
            n_synthetic,
            warmup=0,
            repeats=3,
        )
    )
    return rows
