"""Prepared splits as in-memory uint8 tensors, and the batching every training loop shares.

Images stay uint8 [N, H, W] (64 px: 4 KB each, the full NIH set ~460 MB) on the training device; a batch
is indexed out and scaled to [-1, 1] there, so no file is decoded inside a training step. From 128 px on
(the full set: 1.8 GB at 128 px, 7.3 GB at 256) the images are memory-mapped from the npz file instead of
read: the OS pages in what the batches touch and can drop it again, so host memory does not have to hold
every split at once. On CUDA the split is still copied to the GPU once, which holds it easily.
"""

from __future__ import annotations

import struct
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cxraug.core.errors import CxraugError

SPLIT_KEYS = ("images", "labels", "patient_ids", "image_index", "classes")
MMAP_FROM_SIZE = 128  # image side from which load_split memory-maps the images


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 [N, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: tuple[str, ...]
    patient_ids: np.ndarray
    image_index: np.ndarray
    memory_mapped: bool = False  # images are a read-only view of the npz file (load_split, >= 128 px)

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
        """On another device (a CPU split stays where it is: a memory-mapped one is not read in). To CUDA
        through pinned memory, asynchronously: the copy overlaps the host work that follows."""
        device = torch.device(device)
        if device.type == "cuda" and self.images.device.type == "cpu":
            images = self.images.pin_memory().to(device, non_blocking=True)
            labels = self.labels.pin_memory().to(device, non_blocking=True)
        else:
            images, labels = self.images.to(device), self.labels.to(device)
        return replace(
            self,
            images=images,
            labels=labels,
            memory_mapped=self.memory_mapped and images.data_ptr() == self.images.data_ptr(),
        )


def load_split(prepared_dir: str | Path, name: str, mmap: bool | None = None) -> Split:
    """Load data/prepared/<name>.npz; a missing or foreign file is a one-line error. `mmap`: memory-map
    the images instead of reading them (default: from MMAP_FROM_SIZE px on, when the file allows it)."""
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
            arrays = {k: npz[k] for k in SPLIT_KEYS if k != "images"}
            mapped = npz_member_memmap(path, "images")
            if mapped is not None and mmap is None:
                mmap = mapped.ndim == 3 and mapped.shape[-1] >= MMAP_FROM_SIZE
            arrays["images"] = mapped if mmap and mapped is not None else npz["images"]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise CxraugError(f"{path}: unreadable ({e}); rerun `cxraug prepare`") from None
    if arrays["images"].dtype != np.uint8 or arrays["images"].ndim != 3:
        raise CxraugError(
            f"{path}: images must be uint8 [N, H, W], got {arrays['images'].dtype} "
            f"{arrays['images'].shape}; rerun `cxraug prepare`"
        )
    memory_mapped = isinstance(arrays["images"], np.memmap)
    with warnings.catch_warnings():  # a read-only mapping: torch warns that it cannot write to it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        images = torch.from_numpy(arrays["images"])
    return Split(
        images=images,
        labels=torch.from_numpy(arrays["labels"].astype(np.int64)),
        classes=tuple(str(c) for c in arrays["classes"]),
        patient_ids=arrays["patient_ids"],
        image_index=arrays["image_index"],
        memory_mapped=memory_mapped,
    )


def npz_member_memmap(path: Path, key: str) -> np.memmap | None:
    """A read-only memory map of array `key` inside an npz file, or None when the member is compressed
    (np.load's mmap_mode ignores npz files; an uncompressed member is a plain .npy at some offset)."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(f"{key}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local_header = f.read(30)  # fixed part of the zip local file header, then name and extra field
        name_length, extra_length = struct.unpack("<HH", local_header[26:30])
        f.seek(info.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(f)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else (np.lib.format.read_array_header_2_0)
        )
        shape, fortran_order, dtype = read_header(f)
        offset = f.tell()
    if dtype.hasobject or not shape or 0 in shape:
        return None
    return np.memmap(
        path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran_order else "C"
    )


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W] -> float [B, 1, H, W] in [-1, 1] (the generators' tanh range)."""
    return images.unsqueeze(1).float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [B, 1, H, W] in [-1, 1] -> uint8 [B, H, W] (what is stored and shown)."""
    return images.detach().float().squeeze(1).add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)
