"""Prepared splits as in-memory uint8 tensors, and the batching every training loop shares.

Images stay uint8 [N, H, W] (64 px: 4 KB each, the full NIH set ~460 MB) on the training device; a batch
is indexed out and scaled to [-1, 1] there, so no file is decoded inside a training step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxraug.errors import CxraugError

SPLIT_KEYS = ("images", "labels", "patient_ids", "image_index", "classes")


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]
    patient_ids: np.ndarray
    image_index: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def class_counts(self) -> torch.Tensor:
        return torch.bincount(self.labels, minlength=self.n_classes)

    def to(self, device: torch.device | str) -> Split:
        return Split(
            self.images.to(device), self.labels.to(device), self.classes, self.patient_ids, self.image_index
        )


def load_split(prepared_dir: str | Path, name: str) -> Split:
    """Load data/prepared/<name>.npz; a missing or foreign file is a one-line error."""
    path = Path(prepared_dir) / f"{name}.npz"
    if not path.is_file():
        raise CxraugError(f"{path}: not found; run `cxraug prepare` (or `dvc repro prepare`) first")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in SPLIT_KEYS if k not in npz]
            if missing:
                raise CxraugError(
                    f"{path}: lacks {missing}; it was not written by `cxraug prepare`, rerun it"
                )
            arrays = {k: npz[k] for k in SPLIT_KEYS}
    except (OSError, ValueError) as e:
        raise CxraugError(f"{path}: unreadable ({e}); rerun `cxraug prepare`") from None
    if arrays["images"].dtype != np.uint8 or arrays["images"].ndim != 3:
        raise CxraugError(
            f"{path}: images must be uint8 [N, H, W], got {arrays['images'].dtype} "
            f"{arrays['images'].shape}; rerun `cxraug prepare`"
        )
    return Split(
        images=torch.from_numpy(arrays["images"]),
        labels=torch.from_numpy(arrays["labels"].astype(np.int64)),
        classes=tuple(str(c) for c in arrays["classes"]),
        patient_ids=arrays["patient_ids"],
        image_index=arrays["image_index"],
    )


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W] -> float [B, 1, H, W] in [-1, 1] (the generators' tanh range)."""
    return images.unsqueeze(1).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [B, 1, H, W] in [-1, 1] -> uint8 [B, H, W] (what is stored and shown)."""
    return images.detach().float().squeeze(1).add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator, shuffle: bool = True, drop_last: bool = True
) -> Iterator[torch.Tensor]:
    """One epoch of index batches drawn with an explicit generator (so a resumed run replays the same)."""
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def balanced_indices(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n indices with every class equally likely (uniform within a class): oversampling rare findings."""
    counts = torch.bincount(labels).clamp(min=1).float()
    weights = (1.0 / counts)[labels]
    return torch.multinomial(weights, n, replacement=True, generator=generator)
