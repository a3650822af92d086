"""Throughput of what the synthesize stage adds around a GAN: the filter loop (with a proposer that costs
nothing, so only our overhead is timed), writing the PNGs + index, and `load_synthetic` reading them back.
The GANs' own sampling rates are measured by their benchmarks (`cxraug bench bagan|opengan`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from cxraug.benchmarks.common import Measurement, measure
from cxraug.synthesis.draw import synthesize
from cxraug.synthesis.files import load_synthetic, write_synthetic


class PoolProposer:
    """Candidates drawn from a fixed pool of blurred-noise images (about as compressible as a 64 px chest
    X-ray) with uniform scores: proposing costs only an index, so the filter loop's own cost is timed."""

    def __init__(self, n_classes: int, size: int, pool: int = 1024) -> None:
        self.classes = tuple(f"class {k}" for k in range(n_classes))
        coarse = torch.rand(pool, 1, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
        smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        self.pool = (smooth[:, 0] * 255).to(torch.uint8)

    def propose(self, class_index: int, n: int, generator: torch.Generator):
        pick = torch.randint(0, len(self.pool), (n,), generator=generator)
        return self.pool[pick], torch.rand(n, generator=generator)


def bench_synthesize(
    n_per_class: int, n_classes: int, size: int, workdir: Path | None = None, threshold: float = 0.5
) -> list[Measurement]:
    proposer = PoolProposer(n_classes, size)
    total = n_per_class * n_classes

    def draw():
        return synthesize(proposer, n_per_class, threshold, 20.0, 256, torch.Generator().manual_seed(0))

    draws = draw()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:  # file creation speed depends on the file system
        out = Path(tmp) / "synthetic"
        return [
            measure(f"filter loop, threshold {threshold} ({total:,} kept)", draw, total, warmup=0, repeats=3),
            measure(f"write PNGs + index.csv ({size} px)", lambda: write_synthetic(draws, out), total, 0, 3),
            measure("load_synthetic (decode all)", lambda: load_synthetic(out, n_per_class), total, 0, 3),
        ]
