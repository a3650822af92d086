"""`cxraug bench scale`: does the data path stay linear as the data set grows?

Demo phantoms are generated once at the largest count; each smaller data set is the first n rows of its
metadata file (same images, same layout). For each n, in a fresh process (so memory figures are its own):
`prepare` (decode, resize, split, write npz), `load_split` of train (time, resident memory it adds, the
uint8 tensor's bytes), and one epoch of training batches (index, scale to [-1, 1], channels_last). The
per-image columns stay flat when time and memory grow linearly. At the largest n the data set is also
prepared at 128 px (upsampled), where load_split memory-maps the images: resident memory then barely grows
at load.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cxraug.benchmarks.common import table
from cxraug.benchmarks.workspace import temporary_tracking
from cxraug.core.config import PrepareParams
from cxraug.data.datasets import load_split, to_model_range
from cxraug.data.demo import make_demo_data
from cxraug.data.prepare import prepare


@dataclass(frozen=True)
class ScalePoint:
    n_images: int  # rows of the metadata file
    image_size: int
    train_images: int
    prepare_seconds: float
    load_seconds: float
    load_rss_mb: float  # resident memory added by load_split
    images_mb: float  # bytes of the uint8 train tensor
    epoch_seconds: float  # one epoch of training batches, from the uint8 tensor to a model-ready batch
    memory_mapped: bool

    @property
    def per_image(self) -> dict[str, float]:
        return {
            "prepare ms/image": 1e3 * self.prepare_seconds / self.n_images,
            "epoch µs/image": 1e6 * self.epoch_seconds / self.train_images,
            "load KB/image": 1e3 * self.load_rss_mb / self.train_images,
        }


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def subset(raw: Path, n: int, out: Path) -> Path:
    """An NIH-layout directory holding the first n metadata rows of `raw` (images linked, not copied)."""
    out.mkdir(parents=True)
    for entry in raw.iterdir():
        if entry.name.startswith("Data_Entry"):
            lines = entry.read_text().splitlines(keepends=True)
            (out / entry.name).write_text("".join(lines[: n + 1]))
        elif entry.is_dir():  # real folders of linked files: recursive globbing skips linked folders
            for file in entry.rglob("*"):
                if file.is_file():
                    target = out / file.relative_to(raw)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.symlink_to(file.resolve())
        else:
            (out / entry.name).symlink_to(entry.resolve())
    return out


def measure_point(
    raw: Path, n: int, image_size: int, work: Path, batch: int = 64, epochs_timed: int = 5
) -> ScalePoint:
    """One data set size, measured in the calling process (run it in a fresh one)."""
    import torch

    os.environ.setdefault("CXRAUG_NO_PROGRESS", "1")
    out = work / f"prepared-{n}-{image_size}"
    started = time.perf_counter()
    with temporary_tracking(f"sqlite:///{work}/mlflow.db"):
        prepare(PrepareParams(image_size=image_size), raw, out, work / f"prepare-{n}-{image_size}.json")
    prepare_seconds = time.perf_counter() - started

    before = _rss_mb()
    started = time.perf_counter()
    train = load_split(out, "train")
    images = train.images.contiguous() if not train.memory_mapped else train.images
    load_seconds, load_rss = time.perf_counter() - started, _rss_mb() - before

    g = torch.Generator().manual_seed(0)
    epochs = []
    for _ in range(epochs_timed):  # median of a few epochs: one epoch is a fraction of a second
        started = time.perf_counter()
        for idx in torch.randperm(len(train), generator=g).split(batch):
            to_model_range(images[idx]).contiguous(memory_format=torch.channels_last)
        epochs.append(time.perf_counter() - started)
    epoch_seconds = statistics.median(epochs)
    return ScalePoint(
        n,
        image_size,
        len(train),
        prepare_seconds,
        load_seconds,
        load_rss,
        images.numel() / 2**20,
        epoch_seconds,
        train.memory_mapped,
    )


def run(counts: tuple[int, ...], image_size: int = 64, mmap_size: int | None = 128) -> list[ScalePoint]:
    """Generate max(counts) demo phantoms, then measure every count (and the largest at `mmap_size`)."""

    points = []
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="cxraug-bench-scale-") as tmp:
        root = Path(tmp)
        largest = max(counts)
        # phantoms at the in-memory side; the memory-mapped run upsamples them (rendering 128 px phantoms
        # would take 4x as long and measures nothing more)
        make_demo_data(root / "raw", n_images=largest, size=max(64, image_size), seed=0)
        jobs = [(n, image_size) for n in sorted(counts)]
        if mmap_size:
            jobs.append((largest, mmap_size))
        for n, size in jobs:
            raw = subset(root / "raw", n, root / f"raw-{n}-{size}")
            with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
                points.append(pool.submit(measure_point, raw, n, size, root).result())
    return points


def marginal(points: list[ScalePoint], attr: str, per: str = "n_images") -> list[float | None]:
    """Per added image, between consecutive in-memory sizes: the slope that linear growth keeps constant
    (the per-image averages also carry fixed costs such as starting MLflow and the decoding processes)."""
    out, previous = [], None
    for p in points:
        if previous is None or p.memory_mapped or p.image_size != previous.image_size:
            out.append(None)
        else:
            out.append(
                (getattr(p, attr) - getattr(previous, attr)) / (getattr(p, per) - getattr(previous, per))
            )
        if not p.memory_mapped:
            previous = p
    return out


def markdown(points: list[ScalePoint]) -> str:
    rows = []
    prepare_slope = marginal(points, "prepare_seconds")
    epoch_slope = marginal(points, "epoch_seconds", per="train_images")
    for p, ps, es in zip(points, prepare_slope, epoch_slope, strict=True):
        per = p.per_image
        rows.append(
            [
                f"{p.n_images:,}",
                f"{p.image_size}{' (mmap)' if p.memory_mapped else ''}",
                f"{p.train_images:,}",
                f"{p.prepare_seconds:.1f}",
                f"{per['prepare ms/image']:.2f}",
                "-" if ps is None else f"{1e3 * ps:.2f}",
                f"{p.images_mb:.1f}",
                f"{p.load_rss_mb:.1f}",
                f"{p.load_seconds:.2f}",
                f"{p.epoch_seconds:.2f}",
                f"{per['epoch µs/image']:.1f}",
                "-" if es is None else f"{1e6 * es:.1f}",
            ]
        )
    header = [
        "images",
        "px",
        "train",
        "prepare (s)",
        "prepare ms/image",
        "prepare ms per added image",
        "train tensor (MB)",
        "RSS added by load (MB)",
        "load (s)",
        "epoch of batches (s)",
        "epoch µs/image",
        "epoch µs per added image",
    ]
    return table(header, rows) + "\n"


def as_json(points: list[ScalePoint]) -> list[dict]:
    return [{**asdict(p), **p.per_image} for p in points]
