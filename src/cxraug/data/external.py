"""An external validation set: every single-label image of the study's classes in a second data set.

No split: all of it is test. Images are converted exactly as `prepare` converts them (the same
`decode_files` / `medmnist_images`), so a classifier sees them as it saw its own test split. Three layouts:

- NIH: `Data_Entry_2017*.csv[.gz]` at the top, images anywhere below (read by `sources.read_nih`);
  labels from 'Finding Labels', patients from 'Patient ID' -> a patient-level bootstrap.
- MedMNIST+: a `chestmnist_<size>.npz` file, or a directory holding one (`sources.read_medmnist`); all
  three of its splits are used; no patient ids -> an image-level bootstrap.
- class folders: `DIR/<class name>/**/*.png|jpg|jpeg`; no patient ids -> an image-level bootstrap.
  A folder is a study class only if its name is EXACTLY the study's name (case, spaces and underscores
  included): guessing that 'pleural thickening' means 'Pleural_Thickening' could silently merge classes,
  so a folder that differs from a study class only in case, spaces, '_' or '-' is a one-line error that
  says which rename is meant. Other folders are classes the study does not have: counted and skipped.

Skips are counted by reason (`SKIP_REASONS`). Besides prepare's reasons, images with identical pixels are
kept once ('duplicate_pixels') and dropped altogether when their labels disagree ('conflicting_label'):
class-folder exports of multi-label data put one image into several folders.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import CxraugError
from cxraug.data.datasets import Split
from cxraug.data.prepare import decode_files, medmnist_images
from cxraug.data.sources import IMAGE_SUFFIXES, Source, _find_metadata, read_source

log = logging.getLogger(__name__)

SKIP_REASONS = (
    "missing",  # a metadata row whose image file is not below DIR
    "unreadable",
    "truncated",
    "multi_label",
    "other_class",  # a class the study does not have
    "duplicate_file",  # an Image Index found twice below DIR (NIH)
    "duplicate_row",  # an Image Index listed twice in the metadata (NIH)
    "unsupported_format",  # a file in a class folder that is not png/jpg/jpeg (e.g. DICOM)
    "outside_class_folder",  # an image file directly in DIR (class-folder layout)
    "duplicate_pixels",  # the same pixels again, with the same label: kept once
    "conflicting_label",  # the same pixels under two different labels: dropped
)
FOLDER_LAYOUT_HINT = (
    "expected the NIH layout (Data_Entry_2017*.csv[.gz] at the top), a MedMNIST+ chestmnist_<size>.npz, "
    "or one folder per class (DIR/<class name>/*.png|jpg)"
)


def pixel_md5(image: np.ndarray) -> str:
    """md5 of a uint8 image's bytes: what the overlap guard compares."""
    return hashlib.md5(np.ascontiguousarray(image, dtype=np.uint8).tobytes()).hexdigest()


@dataclass(frozen=True)
class ExternalSet:
    """The images to score, their labels (indices into `classes`, the STUDY's classes) and provenance."""

    root: Path
    layout: str  # "nih" | "medmnist" | "folders"
    classes: tuple[str, ...]
    images: np.ndarray  # uint8 [N, S, S]
    labels: np.ndarray  # int64 [N]
    image_index: np.ndarray  # str [N]: Image Index (NIH), 'split/row' (npz), path below DIR (folders)
    files: np.ndarray  # str [N]: the file each image came from (the npz itself for MedMNIST)
    pixel_md5: np.ndarray  # str [N]
    patient_ids: np.ndarray | None  # str [N] where the metadata has them (NIH), else None
    skipped: dict[str, int] = field(default_factory=dict)  # every SKIP_REASONS key
    other_classes: dict[str, int] = field(default_factory=dict)  # skipped class name -> images

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def bootstrap_unit(self) -> str:
        """'patient' when patients are known (their images are resampled together), else 'image'."""
        return "image" if self.patient_ids is None else "patient"

    @property
    def bootstrap_ids(self) -> np.ndarray:
        """The resampling unit per image, for `metrics.inference.two_level_interval`'s patient_ids."""
        return self.patient_ids if self.patient_ids is not None else np.arange(len(self)).astype(str)

    def counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts, strict=True)}

    @property
    def present_classes(self) -> list[str]:
        return [c for c, n in self.counts().items() if n]

    @property
    def absent_classes(self) -> list[str]:
        """Study classes without a usable image in DIR: their AUC is undefined (not 0.5)."""
        return [c for c, n in self.counts().items() if not n]

    def md5(self) -> str:
        """md5 of the scored pixels, in order: equal md5 = the very same external images."""
        return hashlib.md5(np.ascontiguousarray(self.images).tobytes()).hexdigest()

    def describe(self, i: int) -> str:
        """Where image i came from, for messages: its file, or the npz and row."""
        if self.layout == "medmnist":
            return f"{self.files[i]}[{self.image_index[i]}]"
        return str(self.files[i])


# ------------------------------------------------------------------------------------------- layouts


def detect_layout(path: Path) -> str:
    """'nih' | 'medmnist' | 'folders' for an existing path; a one-line error for anything else."""
    if path.is_file():
        if path.suffix == ".npz":
            return "medmnist"
        raise CxraugError(f"{path}: is a file but not an npz; {FOLDER_LAYOUT_HINT}")
    if _find_metadata(path) is not None:
        return "nih"
    if sorted(path.glob("chestmnist*.npz")):
        return "medmnist"
    return "folders"


def _normalised(name: str) -> str:
    return "".join(name.casefold().replace("-", " ").replace("_", " ").split())


def _class_folders(root: Path, classes: tuple[str, ...]) -> list[Path]:
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    by_normal = {_normalised(c): c for c in classes}
    for folder in folders:
        meant = by_normal.get(_normalised(folder.name))
        if meant is not None and folder.name != meant:
            raise CxraugError(
                f"{folder}: folder names must match the study's class names exactly; rename it to "
                f"'{meant}' (or, if it is another class, to a name that is not that close)"
            )
    return folders


def _folder_images(folder: Path, skipped: Counter) -> list[str]:
    """Image files anywhere below a class folder (sorted, hidden files ignored); others counted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                found.append(os.path.join(dirpath, name))
            else:
                skipped["unsupported_format"] += 1
    return found


def _read_folders(root: Path, classes: tuple[str, ...], skipped: Counter, other: Counter) -> pd.DataFrame:
    rows = []
    for folder in _class_folders(root, classes):
        files = _folder_images(folder, skipped)
        if folder.name not in classes:
            other[folder.name] += len(files)
            continue
        for f in files:
            index = Path(f).relative_to(root).as_posix()
            rows.append({"image_index": index, "finding_labels": folder.name, "patient_id": "", "path": f})
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    skipped["outside_class_folder"] += len(loose)
    if not rows and not other:
        raise CxraugError(f"{root}: no class folders with images found; {FOLDER_LAYOUT_HINT}")
    return pd.DataFrame(rows, columns=["image_index", "finding_labels", "patient_id", "path"])


def _select(source: Source, classes: tuple[str, ...], skipped: Counter, other: Counter) -> pd.DataFrame:
    """Single-label records of the study's classes (NIH or MedMNIST); the rest counted by reason."""
    single = source.single_label
    skipped["multi_label"] += len(source.records) - len(single)
    wanted = single["finding_labels"].isin(classes)
    other.update(single.loc[~wanted, "finding_labels"].value_counts().to_dict())
    kept = single[wanted]
    if source.kind == "nih":
        missing = kept["path"] == ""
        skipped["missing"] += int(missing.sum())
        kept = kept[~missing]
        skipped["duplicate_file"] += source.duplicate_files
        skipped["duplicate_row"] += source.duplicate_rows
    return kept.reset_index(drop=True)


# ------------------------------------------------------------------------------------------- reading


def _decode(
    layout: str, source_file: Path | None, kept: pd.DataFrame, size: int, workers: int, skipped: Counter
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    if layout == "medmnist":
        images = medmnist_images(source_file, kept["image_index"].tolist(), size)
        return kept.assign(path=str(source_file)), images
    ok, images = [], []
    for i, (image, problem) in enumerate(decode_files(kept["path"].tolist(), size, workers)):
        if image is None:
            reason, detail = problem.split("\t", 1)
            log.warning("skipping %s", detail)
            skipped[reason] += 1
        else:
            ok.append(i)
            images.append(image)
    return kept.iloc[ok].reset_index(drop=True), images


def _drop_duplicate_pixels(
    kept: pd.DataFrame, images: list[np.ndarray], skipped: Counter
) -> tuple[pd.DataFrame, list[np.ndarray]]:
    kept = kept.assign(md5=[pixel_md5(a) for a in images])
    labels_per_md5 = kept.groupby("md5")["label"].nunique()
    conflicting = kept["md5"].isin(labels_per_md5.index[labels_per_md5 > 1])
    skipped["conflicting_label"] += int(conflicting.sum())
    repeated = kept["md5"].duplicated() & ~conflicting
    skipped["duplicate_pixels"] += int(repeated.sum())
    keep = np.flatnonzero(~(conflicting | repeated).to_numpy())
    return kept.iloc[keep].reset_index(drop=True), [images[i] for i in keep]


def read_external(
    directory: str | Path, classes: list[str] | tuple[str, ...], image_size: int, workers: int = 0
) -> ExternalSet:
    """Every single-label image of `classes` (the study's, in its order) below `directory`, as uint8
    [image_size, image_size] converted like prepare. Unusable files are skipped and counted; a missing
    directory, no study class in it, or nothing readable is a one-line CxraugError."""
    root, classes = Path(directory), tuple(classes)
    if not root.exists():
        raise CxraugError(f"{root}: no such directory or file; {FOLDER_LAYOUT_HINT}")
    layout = detect_layout(root)
    skipped: Counter = Counter()
    other: Counter = Counter()
    source_file = None
    if layout == "folders":
        kept = _read_folders(root, classes, skipped, other)
    else:
        source = read_source(root, image_size)
        source_file = source.metadata
        kept = _select(source, classes, skipped, other)
    skipped["other_class"] += sum(other.values())
    where = "as class folders" if layout == "folders" else "in its labels"
    if kept.empty:
        found = ", ".join(sorted(other)) or "nothing usable"
        missing = f" ({skipped['missing']} listed without their file below it)" if skipped["missing"] else ""
        raise CxraugError(
            f"{root}: none of the study's classes ({', '.join(classes)}) has images there{missing}; "
            f"found {where}: {found}"
        )
    kept = kept.assign(
        label=kept["finding_labels"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    )
    kept, images = _decode(layout, source_file, kept, image_size, workers, skipped)
    if not images:
        bad = ", ".join(f"{r} {skipped[r]}" for r in ("unreadable", "truncated", "missing") if skipped[r])
        raise CxraugError(f"{root}: no readable images of the study's classes ({bad or 'none found'})")
    kept, images = _drop_duplicate_pixels(kept, images, skipped)
    present = sorted(set(kept["label"]))
    if len(present) < 2:
        raise CxraugError(
            f"{root}: only '{classes[present[0]]}' of the study's classes has usable images there; a "
            "one-vs-rest AUC needs images of at least two of them"
        )
    external = ExternalSet(
        root=root,
        layout=layout,
        classes=classes,
        images=np.stack(images).astype(np.uint8),
        labels=kept["label"].to_numpy(np.int64),
        image_index=kept["image_index"].to_numpy().astype(str),
        files=kept["path"].to_numpy().astype(str),
        pixel_md5=kept["md5"].to_numpy().astype(str),
        patient_ids=kept["patient_id"].to_numpy().astype(str) if layout == "nih" else None,
        skipped={r: int(skipped[r]) for r in SKIP_REASONS},
        other_classes={name: int(n) for name, n in sorted(other.items())},
    )
    if external.absent_classes:
        log.warning("%s: no images of %s (their AUC is undefined)", root, ", ".join(external.absent_classes))
    return external


# ------------------------------------------------------------------------------------------- overlap


def check_no_overlap(external: ExternalSet, train: Split, others: dict[str, Split] | None = None) -> None:
    """An external image equal to a study image (the same pixels, or the same Image Index: its name or
    file name) is a CxraugError naming the file: external validation on the study's own data is a
    silent lie. `train` is always checked; `others` (e.g. {'val': val, 'test': test}) as given."""
    for split_name, split in {"train": train, **(others or {})}.items():
        if split.image_size != external.image_size:
            raise CxraugError(
                f"the external images are {external.image_size} px but the {split_name} split is "
                f"{split.image_size} px; read the external set at the study's image_size"
            )
        images = split.images.numpy()
        md5_to_index = {pixel_md5(images[j]): str(split.image_index[j]) for j in range(len(images))}
        names = set(map(str, split.image_index))
        hits = []
        for i in range(len(external)):
            same_pixels = md5_to_index.get(str(external.pixel_md5[i]))
            index = str(external.image_index[i])
            same_name = index if index in names else Path(index).name if Path(index).name in names else None
            if same_pixels is not None:
                hits.append((i, f"has the same pixels as {split_name} image {same_pixels}"))
            elif same_name is not None:
                hits.append((i, f"has the Image Index of {split_name} image {same_name}"))
        if hits:
            i, why = hits[0]
            more = f" ({len(hits) - 1} more external images overlap it)" if len(hits) > 1 else ""
            raise CxraugError(
                f"{external.describe(i)}: {why}{more}; an external set must not contain the study's images"
            )
