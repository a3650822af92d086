"""Reading synthetic images back (the classify stage's side of the synthesize stage's on-disk format).

NOTE for the merge: this file holds ONLY `load_synthetic`, written on the classify branch so that it can
be tested there; the synth-report branch owns the rest of this module (sampling, filtering, writing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxraug.errors import CxraugError

INDEX_COLUMNS = ("file", "class", "label", "score")


def load_synthetic(directory: str | Path, n_per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n_per_class` accepted images of every class in data/synthetic/<gan>/ (index.csv order,
    i.e. acceptance order): uint8 [K * n, H, W] and int64 labels, class by class. Decodes the PNGs once;
    fewer than n images of a class is an error naming the class."""
    directory = Path(directory)
    index_path = directory / "index.csv"
    if not index_path.is_file():
        raise CxraugError(f"{index_path}: not found; run `cxraug synthesize` (dvc repro synthesize) first")
    index = pd.read_csv(index_path)
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise CxraugError(f"{index_path}: lacks column(s) {missing}; rerun `cxraug synthesize`")
    images, labels = [], []
    for label, rows in index.groupby("label", sort=True):
        if len(rows) < n_per_class:
            raise CxraugError(
                f"{directory}: class '{rows['class'].iloc[0]}' has {len(rows)} synthetic images, "
                f"{n_per_class} requested; raise synthesize.n_per_class's maximum and rerun synthesize"
            )
        for file in rows["file"].iloc[:n_per_class]:
            path = directory / file
            try:
                with Image.open(path) as im:
                    images.append(np.asarray(im.convert("L"), dtype=np.uint8))
            except OSError as e:
                raise CxraugError(f"{path}: unreadable synthetic image ({e}); rerun synthesize") from None
        labels += [int(label)] * n_per_class
    if not images:
        return torch.zeros((0, 0, 0), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise CxraugError(f"{directory}: synthetic images differ in size {sorted(shapes)}; rerun synthesize")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)
