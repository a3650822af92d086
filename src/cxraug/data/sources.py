"""Read a data source into one records table: the NIH ChestX-ray14 layout or a MedMNIST+ ChestMNIST npz.

Records columns: image_index, finding_labels ('A|B'), patient_id, path ('' when the file is absent),
official_split ('train_val' | 'test' for NIH lists; 'train' | 'val' | 'test' for MedMNIST; '' if none).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from cxraug.core.errors import CxraugError

METADATA_NAMES = [
    "Data_Entry_2017_v2020.csv",  # NIH's 2020 update (corrected ages, same labels): preferred
    "Data_Entry_2017_v2020.csv.gz",
    "Data_Entry_2017.csv",
    "Data_Entry_2017.csv.gz",
]
REQUIRED_COLUMNS = ["Image Index", "Finding Labels", "Patient ID"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
OFFICIAL_LISTS = {"train_val": "train_val_list.txt", "test": "test_list.txt"}
NO_FINDING = "No Finding"

# MedMNIST's ChestMNIST label order (its INFO['chestmnist']['label']), mapped to NIH's label names.
MEDMNIST_LABELS = [
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
    "Consolidation",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Pleural_Thickening",
    "Hernia",
]
NIH_LAYOUT_HINT = (
    "expected the NIH layout: Data_Entry_2017.csv or Data_Entry_2017_v2020.csv (optionally .gz) at the top, "
    "images anywhere below (images/ or images_001/images/ ...), or a MedMNIST+ chestmnist_<size>.npz"
)


@dataclass
class Source:
    kind: str  # "nih" | "medmnist"
    root: Path
    metadata: Path
    records: pd.DataFrame
    duplicate_files: int = 0
    duplicate_rows: int = 0
    official_lists: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def single_label(self) -> pd.DataFrame:
        return self.records[~self.records["finding_labels"].str.contains("|", regex=False)]

    def single_label_counts(self) -> pd.Series:
        return self.single_label["finding_labels"].value_counts()


def _find_metadata(root: Path) -> Path | None:
    for name in METADATA_NAMES:
        if (root / name).is_file():
            return root / name
    for name in METADATA_NAMES:  # e.g. an archive extracted one level deeper
        hits = sorted(root.glob(f"*/{name}"))
        if hits:
            return hits[0]
    return None


def _scan_images(root: Path) -> tuple[dict[str, str], int]:
    """Image Index -> path for every image file below root; a name found twice is used once."""
    found: dict[str, str] = {}
    duplicates = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith("."):
                if name in found:
                    duplicates += 1
                else:
                    found[name] = os.path.join(dirpath, name)
    return found, duplicates


def read_nih_metadata(path: Path) -> pd.DataFrame:
    """The NIH CSV (its header has 9 names for 11 fields; pandas splits the two bracketed names)."""
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError) as e:
        raise CxraugError(f"{path}: cannot be parsed as the NIH metadata CSV ({e})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CxraugError(
            f"{path}: missing column(s) {', '.join(map(repr, missing))} (found {list(table.columns)[:6]})"
        )
    return table


def read_nih(root: Path) -> Source:
    metadata = _find_metadata(root)
    if metadata is None:
        raise CxraugError(f"{root}: no NIH metadata file found; {NIH_LAYOUT_HINT}")
    table = read_nih_metadata(metadata)
    before = len(table)
    table = table.drop_duplicates(subset="Image Index", keep="first")
    images, duplicate_files = _scan_images(root)

    official = pd.Series("", index=table.index)
    lists = {split: root / name for split, name in OFFICIAL_LISTS.items()}
    has_lists = all(p.is_file() for p in lists.values())
    if has_lists:
        for split, list_path in lists.items():
            names = set(list_path.read_text().split())
            official[table["Image Index"].isin(names)] = split

    records = pd.DataFrame(
        {
            "image_index": table["Image Index"].str.strip(),
            "finding_labels": table["Finding Labels"].str.strip(),
            "patient_id": table["Patient ID"].str.strip().str.lstrip("0").replace("", "0"),
            "official_split": official,
        }
    ).reset_index(drop=True)
    records["path"] = [images.get(name, "") for name in records["image_index"]]
    return Source(
        kind="nih",
        root=root,
        metadata=metadata,
        records=records,
        duplicate_files=duplicate_files,
        duplicate_rows=before - len(table),
        official_lists=has_lists,
        extra={"image_files": len(images)},
    )


def _pick_npz(candidates: list[Path], image_size: int | None) -> Path:
    def size_of(p: Path) -> int:
        m = re.search(r"_(\d+)\.npz$", p.name)
        return int(m.group(1)) if m else 28

    if image_size is not None:
        exact = [p for p in candidates if size_of(p) == image_size]
        if exact:
            return exact[0]
        larger = sorted((p for p in candidates if size_of(p) > image_size), key=size_of)
        if larger:
            return larger[0]
    return max(candidates, key=size_of)


def read_medmnist(path: Path) -> Source:
    """ChestMNIST npz: exactly one positive label = that finding; all-zero = No Finding; no patient ids."""
    try:
        npz = np.load(path)
        parts = {s: (npz[f"{s}_labels"]) for s in ("train", "val", "test")}
    except (OSError, ValueError, KeyError) as e:
        raise CxraugError(
            f"{path}: not a MedMNIST npz with train/val/test_images and _labels ({e})"
        ) from None
    frames = []
    names = np.array(MEDMNIST_LABELS)
    for split, labels in parts.items():
        if labels.ndim != 2 or labels.shape[1] != len(MEDMNIST_LABELS):
            raise CxraugError(
                f"{path}: {split}_labels has shape {labels.shape}, expected [N, 14] (ChestMNIST)"
            )
        finding = [("|".join(names[row.astype(bool)]) or NO_FINDING) for row in labels]
        frames.append(
            pd.DataFrame(
                {
                    "image_index": [f"{split}/{i}" for i in range(len(labels))],
                    "finding_labels": finding,
                    "patient_id": "",
                    "official_split": split,
                    "path": "",
                }
            )
        )
    return Source(
        kind="medmnist",
        root=path.parent,
        metadata=path,
        records=pd.concat(frames, ignore_index=True),
        official_lists=True,
    )


def read_source(path: str | Path, image_size: int | None = None) -> Source:
    """Detect the layout below `path` and read its records; a clear error when it is neither."""
    path = Path(path)
    if not path.exists():
        raise CxraugError(f"{path}: no such directory; {NIH_LAYOUT_HINT}")
    if path.is_file():
        if path.suffix == ".npz":
            return read_medmnist(path)
        raise CxraugError(f"{path}: is a file; pass the data directory ({NIH_LAYOUT_HINT})")
    if _find_metadata(path) is None:
        npz = sorted(path.glob("chestmnist*.npz"))
        if npz:
            return read_medmnist(_pick_npz(npz, image_size))
    return read_nih(path)
