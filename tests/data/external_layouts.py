"""Builders of small external sets in the three layouts, each returning the truth it wrote.

Images come in several sizes and modes (8-bit gray, RGB, RGBA, 16-bit gray; PNG and JPEG), and every
layout holds what must be skipped: a class the study lacks, multi-label rows, broken files. The returned
`expected` maps each image that must be read to its class NAME, written here independently of the code
under test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxraug.data.demo import NIH_HEADER

CLASSES = ("No Finding", "Effusion", "Nodule")  # the study's classes, in its order
SIZE = 32  # the study's image_size
MODES = ("L", "RGB", "I;16", "RGBA")
SHAPES = ((40, 40), (64, 48), (32, 32), (100, 120))  # (width, height)
# MedMNIST's ChestMNIST label columns (its documented order), for the classes used here
MEDMNIST_COLUMN = {"Effusion": 2, "Mass": 4, "Nodule": 5}


@dataclass
class Layout:
    path: Path  # what read_external is given
    expected: dict[str, str]  # image_index -> class name, for every image that must be read
    skipped: dict[str, int]  # the skip counts that must be reported (reasons not listed: 0)
    patients: dict[str, str] | None = None  # image_index -> patient id (NIH)


def random_image(rng: np.random.Generator, mode: str, shape: tuple[int, int]) -> Image.Image:
    w, h = shape
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    channels = {"L": (), "RGB": (3,), "RGBA": (4,)}[mode]
    return Image.fromarray(rng.integers(0, 256, (h, w, *channels), dtype=np.uint8), mode=mode)


def save_varied(path: Path, i: int, rng: np.random.Generator) -> None:
    """Image number i: mode and size cycle through MODES and SHAPES (JPEG only holds L and RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = MODES[i % len(MODES)]
    if path.suffix in (".jpg", ".jpeg") and mode not in ("L", "RGB"):
        mode = "RGB"
    random_image(rng, mode, SHAPES[i % len(SHAPES)]).save(path)


def write_truncated_png(path: Path, rng: np.random.Generator) -> None:
    random_image(rng, "L", (64, 64)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def build_nih(root: Path, seed: int = 0) -> Layout:
    """3 study classes x 8 patients (1 or 2 images each) in two image folders, plus what is skipped: a
    multi-label row, two 'Mass' rows, a corrupt file, a truncated one, a row without its file."""
    rng = np.random.default_rng(seed)
    rows, expected, patients = [], {}, {}
    i = 0
    for c, name in enumerate(CLASSES):
        for p in range(8):
            patient = 100 * (c + 1) + p
            for k in range(1 + p % 2):
                index = f"{patient:08d}_{k:03d}.png"
                save_varied(root / f"images_00{1 + i % 2}" / "images" / index, i, rng)
                rows.append((index, name, patient))
                expected[index], patients[index] = name, str(patient)
                i += 1
    for index, labels, patient in [
        ("00000900_000.png", "Effusion|Nodule", 900),
        ("00000901_000.png", "Mass", 901),
        ("00000902_000.png", "Mass", 902),
    ]:
        save_varied(root / "images_001" / "images" / index, i, rng)
        rows.append((index, labels, patient))
        i += 1
    (root / "images_001" / "images" / "00000903_000.png").write_bytes(b"not a png at all")
    write_truncated_png(root / "images_002" / "images" / "00000904_000.png", rng)
    rows += [("00000903_000.png", "Effusion", 903), ("00000904_000.png", "Nodule", 904)]
    rows.append(("00000905_000.png", "No Finding", 905))  # no file
    lines = [NIH_HEADER] + [f"{n},{lab},0,{p},40,M,PA,64,64,0.143,0.143" for n, lab, p in rows]
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    skipped = {"multi_label": 1, "other_class": 2, "unreadable": 1, "truncated": 1, "missing": 1}
    return Layout(root, expected, skipped, patients)


def build_folders(root: Path, seed: int = 1, classes: tuple[str, ...] = CLASSES) -> Layout:
    """One folder per class (PNG and JPEG, one class with a subfolder) plus: a 'Mass' folder, a corrupt
    file, a DICOM file, an image loose in DIR, one image copied into two class folders (conflicting
    labels) and one copied within its class (a duplicate)."""
    rng = np.random.default_rng(seed)
    expected = {}
    i = 0
    for name in classes:
        for k in range(6):
            sub = "batch2/" if name == "Effusion" and k >= 3 else ""
            rel = f"{name}/{sub}img_{k}.{'jpg' if k % 3 == 2 else 'png'}"
            save_varied(root / rel, i, rng)
            expected[rel] = name
            i += 1
    for k in range(2):
        save_varied(root / "Mass" / f"m{k}.png", i, rng)
        i += 1
    (root / classes[1] / "broken.png").write_bytes(b"not an image")
    (root / classes[-1] / "scan.dcm").write_bytes(b"DICM")
    (root / classes[-1] / ".DS_Store").write_bytes(b"")
    save_varied(root / "loose.png", i, rng)
    twice = random_image(rng, "L", (48, 48))
    twice.save(root / classes[0] / "both.png")
    twice.save(root / classes[1] / "both.png")
    first = next(rel for rel, name in expected.items() if name == classes[0])
    (root / classes[0] / "zz_copy.png").write_bytes((root / first).read_bytes())
    skipped = {
        "other_class": 2,
        "unreadable": 1,
        "unsupported_format": 1,
        "outside_class_folder": 1,
        "conflicting_label": 2,
        "duplicate_pixels": 1,
    }
    return Layout(root, expected, skipped)


def build_medmnist(path: Path, seed: int = 2) -> Layout:
    """chestmnist_64.npz: train RGB [N, 64, 64, 3], val and test gray [N, 64, 64]; per split rows cycle
    No Finding, Effusion, Nodule, Effusion+Nodule (multi-label), Mass."""
    rng = np.random.default_rng(seed)
    cycle = ["No Finding", "Effusion", "Nodule", "Effusion|Nodule", "Mass"]
    arrays, expected = {}, {}
    for split, n in (("train", 15), ("val", 10), ("test", 10)):
        labels = np.zeros((n, 14), dtype=np.uint8)
        for row in range(n):
            finding = cycle[row % len(cycle)]
            for part in finding.split("|"):
                if part != "No Finding":
                    labels[row, MEDMNIST_COLUMN[part]] = 1
            if finding in CLASSES:
                expected[f"{split}/{row}"] = finding
        shape = (n, 64, 64, 3) if split == "train" else (n, 64, 64)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = labels
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return Layout(path, expected, {"multi_label": 7, "other_class": 7})


def medmnist_reference(path: Path, index: str, size: int) -> np.ndarray:
    """The conversion written out independently: RGB -> L by PIL, Lanczos to size x size."""
    split, row = index.split("/")
    a = np.load(path)[f"{split}_images"][int(row)]
    image = Image.fromarray(a).convert("L")
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0))
