"""Where and how tensors run: device, seeding, precision, and atomic file writes."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from cxraug.core import cpu_layout, distributed
from cxraug.core.errors import CxraugError

PrecisionMode = Literal["auto", "bf16", "fp32"]
_UMASK = os.umask(0)
os.umask(_UMASK)


def pick_device(preference: str = "auto") -> torch.device:
    """cuda > mps > cpu for 'auto'; an explicit choice that is unavailable is an error, not a fallback."""
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CxraugError(f"device '{preference}' requested but CUDA is not available (use device: auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise CxraugError(f"device '{preference}' requested but MPS is not available (use device: auto)")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed every global RNG and return a torch.Generator that training code draws from explicitly.
    CXRAUG_DETERMINISTIC=1 also asks for deterministic GPU kernels (slower), so that a resumed CUDA run
    ends bit for bit where an uninterrupted one does; on CPU our runs are deterministic anyway."""
    if os.environ.get("CXRAUG_DETERMINISTIC") == "1":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class Precision:
    """bf16 autocast and channels_last, applied to modules and batches in one place."""

    device: torch.device
    bf16: bool
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def module(self, module: torch.nn.Module) -> torch.nn.Module:
        return module.to(self.device, memory_format=self.memory_format)

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    def describe(self) -> str:
        return (
            f"{self.device.type}/{'bf16' if self.bf16 else 'fp32'}/{'nhwc' if self.channels_last else 'nchw'}"
        )


def pick_precision(device: torch.device, mode: PrecisionMode = "auto") -> Precision:
    """'auto': bf16 on CUDA when supported; on CPU the layout measured fastest on this machine, measured once
    and remembered (core/cpu_layout.py), so that every process of a study runs alike."""
    if mode == "fp32":
        return Precision(device, bf16=False, channels_last=device.type == "cuda")
    if mode == "bf16":
        return Precision(device, bf16=True, channels_last=True)
    if device.type == "cuda":
        return Precision(device, bf16=torch.cuda.is_bf16_supported(), channels_last=True)
    if device.type == "cpu":
        bf16, channels_last = cpu_layout.fastest()
        return Precision(device, bf16=bf16, channels_last=channels_last)
    return Precision(device, bf16=False, channels_last=False)


# ---------------------------------------------------------------------------------------------- files


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block finishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory beside `path`; when the block finishes it replaces `path` as a
    whole, so readers see the old tree or the new one, never a mix; an exception leaves `path` as it was.
    (Two renames: the old tree moves aside, the new one takes its place, then the old one is deleted.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = tmp.with_name(tmp.name.removesuffix(".tmp") + ".old.tmp")
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700 directories
        moved_aside = path.exists() or path.is_symlink()
        if moved_aside:
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            if moved_aside:
                os.replace(old, path)
            raise
    finally:
        for leftover in (tmp, old):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover.exists() or leftover.is_symlink():
                leftover.unlink()


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def atomic_save(obj: Any, path: str | Path) -> Path:
    """torch.save that never leaves a half-written file behind."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_savez(path: str | Path, **arrays: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object keeps numpy from appending '.npz' to the tmp name
            np.savez(f, **arrays)

    return atomic_write(path, write)


def safe_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load restricted to tensors and plain containers (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise CxraugError(f"{path}: not found (run the stage that produces it first)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a truncated or foreign file: say which and what to do
        raise CxraugError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}); delete it and rerun"
        ) from None


def file_md5(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def progress(iterable=None, **kwargs):
    """tqdm with the project's defaults; CXRAUG_NO_PROGRESS=1 silences every bar (tests, CI logs), and
    under torchrun only rank 0 shows one."""
    from tqdm.auto import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("mininterval", 0.5)
    quiet = os.environ.get("CXRAUG_NO_PROGRESS") == "1" or not distributed.current().is_main
    kwargs.setdefault("disable", quiet)
    return tqdm(iterable, **kwargs)


def end_progress() -> None:
    """Close every bar still open (a stage stopped by an error mid-loop), so that a message printed next
    starts on a line of its own instead of after an unfinished bar."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def slug(name: str) -> str:
    """A file-name-safe lower-case form of a class name ('No Finding' -> 'no_finding')."""
    return "".join(c if c.isalnum() else "_" for c in name.strip().lower()).strip("_") or "unnamed"
