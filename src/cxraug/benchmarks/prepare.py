"""Throughput of `prepare`'s decode + grayscale + resize, in one process and in the process pool."""

from __future__ import annotations

import os
from pathlib import Path

from cxraug.benchmarks.common import Measurement, measure
from cxraug.data.prepare import decode_files
from cxraug.data.sources import read_source


def bench_prepare(raw_dir: Path, image_size: int = 64, limit: int = 2000) -> list[Measurement]:
    paths = [p for p in read_source(raw_dir).records["path"] if p][:limit]
    workers = os.cpu_count() or 1
    return [
        measure(
            f"decode+resize, 1 process ({len(paths)} files)",
            lambda: decode_files(paths, image_size, 1),
            len(paths),
            warmup=0,
            repeats=3,
        ),
        measure(
            f"decode+resize, {workers} processes",
            lambda: decode_files(paths, image_size, workers),
            len(paths),
            warmup=0,
            repeats=3,
        ),
    ]
