"""The data a benchmark runs on, made in a temporary directory: demo phantoms prepared like the real data,
and the same images as class folders of PNG files (what a plain PyTorch loop reads with ImageFolder), at
the prepared size and at the 1024 px of the real NIH files."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxraug.core.config import PrepareParams
from cxraug.data.datasets import load_split
from cxraug.data.demo import make_demo_data
from cxraug.data.prepare import prepare


@dataclass(frozen=True)
class Workspace:
    root: Path
    prepared: Path  # train/val/test.npz at the prepared size
    folders: dict[int, Path]  # side in px -> ImageFolder root (one folder per class)


@contextlib.contextmanager
def temporary_tracking(uri: str | None = None) -> Iterator[str]:
    """MLflow into `uri`, or a throwaway sqlite store: benchmark runs stay out of the project's runs."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    with tempfile.TemporaryDirectory(prefix="cxraug-bench-mlflow-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = uri or f"sqlite:///{tmp}/mlflow.db"
        try:
            yield os.environ["MLFLOW_TRACKING_URI"]
        finally:
            if before is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before


def _write_folder(root: Path, images: np.ndarray, labels: np.ndarray, size: int, limit: int) -> Path:
    """Class folders of PNGs; above the prepared size the image is upscaled and given film grain, so that
    the files compress like real radiographs (NIH's 1024 px PNGs are a few hundred KB)."""
    rng = np.random.default_rng(0)
    for i, (image, label) in enumerate(zip(images[:limit], labels[:limit], strict=True)):
        folder = root / f"class_{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(image)
        if size != image.shape[-1]:
            grain = rng.normal(0, 4.0, (size, size))
            big = np.asarray(pil.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) + grain
            pil = Image.fromarray(np.clip(big, 0, 255).astype(np.uint8))
        pil.save(folder / f"{i:05d}.png")
    return root


def make_workspace(
    root: Path, n_images: int, image_size: int, folder_sizes: tuple[int, ...], folder_limit: int
) -> Workspace:
    """Demo phantoms -> prepare (into root/prepared, tracked into the current MLflow store) -> folders of
    the first `folder_limit` training images at each side in `folder_sizes`."""

    make_demo_data(root / "raw", n_images=n_images, size=max(64, image_size), seed=0)
    prepare(PrepareParams(image_size=image_size), root / "raw", root / "prepared", root / "prepare.json")
    train = load_split(root / "prepared", "train")
    images, labels = train.images.numpy(), train.labels.numpy()
    folders = {
        size: _write_folder(root / f"png{size}", images, labels, size, folder_limit) for size in folder_sizes
    }
    return Workspace(root, root / "prepared", folders)
