"""From a tracked run back to DVC: each input's hash as DVC computes it and records it in dvc.lock (a
file's md5; a directory's `<md5>.dir`, the hash of its manifest), keyed by the path DVC records.

Stages read files inside DVC-tracked directories (data/prepared/train.npz inside data/prepared), so an
input is tagged under the nearest path dvc.lock records (itself or a parent directory) or dvc.yaml names
(a stage's first run, before dvc.lock has it); outside a DVC project the input's own path is used.
Hashes come from dvc-data, DVC's own library.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import yaml

from cxraug.core.races import retry_lost_races

DVC_LOCK = Path("dvc.lock")  # dvc.yaml beside it
SPLITS = ("train", "val", "test")


def dvc_hash(path: str | Path) -> str:
    """The md5 DVC records for `path`: the file's md5, or `<md5>.dir` for a directory."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:  # dry run: hashes only, nothing is stored
        _, _, obj = build(HashFileDB(fs, scratch), str(path), fs, "md5", dry_run=True)
    return obj.hash_info.value


def _entry_path(entry) -> str | None:
    """A deps/outs entry: 'path', {'path': ..., 'md5': ...} (dvc.lock) or {'path': {options}} (dvc.yaml)."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict):
        return entry.get("path") if "path" in entry else next(iter(entry), None)
    return None


@cache
def _recorded(file: Path, mtime: float) -> frozenset[str]:
    stages = (yaml.safe_load(file.read_text()) or {}).get("stages", {})
    paths = set()
    for stage in stages.values():
        stage = stage.get("do", stage)
        for entry in (*stage.get("deps", []), *stage.get("outs", []), *stage.get("metrics", [])):
            path = _entry_path(entry)
            if path and "${" not in path:  # a foreach/matrix template names no one path
                paths.add(path)
    return frozenset(paths)


def recorded_paths(lock: Path = DVC_LOCK) -> frozenset[str]:
    """Every dependency and output path dvc.lock records or dvc.yaml names (none outside a project)."""
    files = (lock, lock.with_name("dvc.yaml"))
    return frozenset().union(*(_recorded(f, f.stat().st_mtime) for f in files if f.is_file()))


def dvc_path(path: str | Path, lock: Path = DVC_LOCK) -> Path:
    """The path under which DVC records `path`: itself or its nearest recorded parent directory."""
    path, recorded = Path(path), recorded_paths(lock)
    for candidate in (path, *path.parents):
        if candidate.as_posix() in recorded:
            return candidate
    return path


def input_tags(inputs: Sequence[str | Path], lock: Path = DVC_LOCK) -> dict[str, str]:
    """`input.<DVC path>.md5` tags, each the hash dvc.lock records for that path."""
    paths = sorted({dvc_path(p, lock) for p in map(Path, inputs) if p.exists()})
    return {f"input.{p.as_posix()}.md5": dvc_hash(p) for p in paths}


def datasets_of(inputs: Sequence[str | Path]) -> dict[str, Path]:
    """The data sets among a stage's inputs, by MLflow context: the prepared train/val/test splits, and a
    synthetic set (a directory with the index.csv that synthesize writes)."""
    found: dict[str, Path] = {}
    for p in map(Path, inputs):
        if p.suffix == ".npz" and p.stem in SPLITS:
            found[p.stem] = p
        elif p.name == "index.csv":
            found["synthetic"] = p.parent
    return found


def log_datasets(datasets: Mapping[str, Path], lock: Path = DVC_LOCK) -> None:
    """mlflow.log_input for each set: source its path, digest DVC's hash of it (a split's file md5 is
    the entry DVC keeps for it in its directory's manifest), tags the DVC path and hash recorded for it."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    for context, path in datasets.items():
        if not path.exists():
            continue
        recorded = dvc_path(path, lock)
        with warnings.catch_warnings():  # two registered local-path sources: the same class, twice
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(path.as_posix())
        dataset = MetaDataset(source, name=context, digest=dvc_hash(path))
        tags = {"dvc.path": recorded.as_posix(), "dvc.md5": dvc_hash(recorded)}
        # two stages logging the same set at once race to create its row (core/races.py)
        retry_lost_races(mlflow.log_input, dataset, context=context, tags=tags)
