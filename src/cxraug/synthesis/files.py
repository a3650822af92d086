"""The synthetic images on disk: the contract between `synthesize` (writer) and `classify` (reader).

Layout: <dir>/<class_slug>/<00000>.png (8-bit gray) and <dir>/index.csv with columns file (relative to
<dir>), class, label, score, in acceptance order. Also the reader of exemplar images for an unseen class.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_dir, atomic_write_json, progress, slug
from cxraug.data.images import BadImage, load_gray
from cxraug.synthesis.draw import ClassDraw

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["file", "class", "label", "score"]
EXEMPLAR_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
WRITERS = 8  # threads writing PNGs


def write_synthetic(draws: Sequence[ClassDraw], out_dir: Path) -> pd.DataFrame:
    """Write every accepted image and index.csv into a fresh directory that replaces `out_dir` whole."""
    slugs = [slug(d.name) for d in draws]
    if len(set(slugs)) != len(slugs):
        raise CxraugError(f"class names {[d.name for d in draws]} share a folder name; rename a class")
    rows, images = [], []
    for draw, folder in zip(draws, slugs, strict=True):
        for i, (image, score) in enumerate(zip(draw.images.numpy(), draw.scores.tolist(), strict=True)):
            rows.append((f"{folder}/{i:05d}.png", draw.name, draw.label, round(score, 6)))
            images.append(image)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    with atomic_dir(out_dir) as tmp:
        for folder in slugs:
            (tmp / folder).mkdir()
        # file creation dominates on slow file systems; threads overlap it (measured 2-3x on 2 cores)
        with ThreadPoolExecutor(WRITERS) as pool:
            done = pool.map(
                lambda job: Image.fromarray(job[1]).save(tmp / job[0]),
                zip(index["file"], images, strict=True),
            )
            for _ in progress(done, total=len(images), desc="write PNGs", unit="img", leave=False):
                pass
        index.to_csv(tmp / "index.csv", index=False)
    return index


def read_index(directory: Path) -> pd.DataFrame:
    path = Path(directory) / "index.csv"
    if not path.is_file():
        raise CxraugError(f"{path}: not found; run `dvc repro synthesize@{Path(directory).name}` first")
    index = pd.read_csv(path, dtype={"file": str, "class": str})
    if list(index.columns) != INDEX_COLUMNS:
        raise CxraugError(
            f"{path}: columns {list(index.columns)}, expected {INDEX_COLUMNS}; rerun synthesize"
        )
    return index


def load_synthetic(
    directory: str | Path,
    n_per_class: int,
    classes: tuple[str, ...] | list[str] | None = None,
    at_most: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n_per_class` accepted images of every class (in acceptance order) as uint8 [N, H, W] and
    int64 labels, class by class. With `classes`, the index's label numbers must name the same classes and
    every one of them must have `n_per_class` images; without, the classes found in index.csv are used.
    With `at_most`, a class with fewer images gives what it has (a filter-sensitivity set's shortfall)."""
    directory = Path(directory)
    index = read_index(directory)
    named = dict(zip(index["label"], index["class"], strict=False))
    labels = range(len(classes)) if classes is not None else sorted(named)
    if classes is not None:
        wrong = {
            label: name for label, name in named.items() if label >= len(classes) or classes[label] != name
        }
        if wrong:
            raise CxraugError(
                f"{directory}/index.csv labels {wrong} do not match the classes {list(classes)}; "
                "rerun synthesize with the GAN trained on these classes"
            )
    files, counts = [], []
    for label in labels:
        rows = index[index["label"] == label]
        if len(rows) < n_per_class and not at_most:
            name = classes[label] if classes is not None else named[label]
            raise CxraugError(
                f"{directory} holds {len(rows)} images of class '{name}', {n_per_class} are needed; "
                "see the shortfall in its metrics/synthesize JSON (lower synthesize.filter.threshold or "
                "raise max_tries_factor)"
            )
        files += rows["file"].head(n_per_class).tolist()
        counts.append(min(len(rows), n_per_class))
    images = [read_png(directory / f) for f in progress(files, desc="read synthetic", unit="img")]
    if len({a.shape for a in images}) > 1:
        raise CxraugError(f"{directory}: images of different sizes {sorted({a.shape for a in images})}")
    stacked = torch.from_numpy(np.stack(images)) if images else torch.zeros((0, 0, 0), dtype=torch.uint8)
    return stacked, torch.tensor(list(labels), dtype=torch.int64).repeat_interleave(
        torch.tensor(counts, dtype=torch.int64)
    )


def read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode != "L":
                raise CxraugError(f"{path}: mode {image.mode}, expected 8-bit gray (L); rerun synthesize")
            return np.asarray(image, dtype=np.uint8)
    except (FileNotFoundError, OSError) as e:
        raise CxraugError(f"{path}: listed in index.csv but unreadable ({e}); rerun synthesize") from None


def read_exemplars(directory: Path, image_size: int) -> torch.Tensor:
    """Every readable image of `directory` (any size or mode) as uint8 [M, size, size]; unreadable files are
    logged and skipped."""
    if not directory.is_dir():
        raise CxraugError(f"{directory}: no such directory of exemplar images")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in EXEMPLAR_SUFFIXES)
    images = []
    for f in files:
        try:
            images.append(load_gray(f, image_size))
        except BadImage as e:
            log.warning("skipping exemplar %s", e)
    if not images:
        raise CxraugError(
            f"{directory}: no readable exemplar images ({len(files)} image files, "
            f"suffixes {sorted(EXEMPLAR_SUFFIXES)})"
        )
    if len(images) < len(files):
        log.warning(
            "%d of %d exemplar files were unreadable and skipped", len(files) - len(images), len(files)
        )
    return torch.from_numpy(np.stack(images))


PROVENANCE_FILE = "provenance.json"


def write_provenance(
    out_dir: Path, model_dir: Path, mode: str, threshold: float, sampler: dict | None = None
) -> dict:
    """<out>/provenance.json: the trainer's recipe.json (generator, consistency term, ... ; {} for a model
    written before it existed), the filter these images passed and the sampler that drew them (diffusion),
    so that a report can say what made them without reading the model directory."""
    recipe_path = Path(model_dir) / "recipe.json"
    recipe = json.loads(recipe_path.read_text()) if recipe_path.is_file() else {}
    provenance = {**recipe, "filter": {"mode": mode, "threshold": threshold}}
    if sampler is not None:
        provenance["sampler"] = sampler
    atomic_write_json(Path(out_dir) / PROVENANCE_FILE, provenance)
    return provenance


def read_provenance(directory: Path) -> dict | None:
    path = Path(directory) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else None
