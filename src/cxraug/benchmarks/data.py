"""How fast a training batch reaches the model: our in-memory uint8 path (and its memory-mapped form for
large images) against a DataLoader decoding PNG files, at the prepared size and at NIH's 1024 px."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from cxraug.benchmarks.common import Measurement, measure, synchronize
from cxraug.benchmarks.reference import png_loader
from cxraug.core.runtime import Precision
from cxraug.data.datasets import load_split, to_model_range


def in_memory(prepared: Path, batch: int, precision: Precision, mmap: bool | None = None) -> Measurement:
    """Index a random batch out of the split's uint8 tensor, scale it to [-1, 1] in the model's layout."""
    split = load_split(prepared, "train", mmap=mmap)
    images = split.images.to(precision.device)
    g = torch.Generator().manual_seed(0)
    side = images.shape[-1]
    mapped = " (memory-mapped)" if split.memory_mapped else ""

    def step():
        idx = torch.randint(0, len(images), (batch,), generator=g).to(precision.device)
        precision.batch(to_model_range(images[idx]))

    return measure(f"uint8 split{mapped}, {side} px -> batch on {precision.device.type}", step, batch, 2, 20)


def png_folder(folder: Path, image_size: int, batch: int, batches: int, workers: int = 2) -> Measurement:
    """DataLoader(ImageFolder) with `workers` decoding processes, after its first batch."""
    loader = png_loader(folder, image_size, batch, workers)
    side = _side(folder)
    it = iter(loader)
    next(it)
    start, n = time.perf_counter(), 0
    while n < batches:
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            continue
        n += 1
    synchronize()
    seconds = (time.perf_counter() - start) / batches
    return Measurement(
        f"DataLoader(ImageFolder), {side} px PNG -> {image_size} px, {workers} workers", batch, seconds
    )


def _side(folder: Path) -> int:
    from PIL import Image

    first = next(p for p in sorted(Path(folder).rglob("*.png")))
    with Image.open(first) as image:
        return image.size[0]
