"""scikit-learn's handwritten digits (8x8, 10 classes) as a small NIH-layout dataset with known answers,
and an independent reader of generated images: the fixture of the generators' quality gate.

- `write_digits_nih`: the chosen digits upscaled (bilinear) to `size` px PNGs, with a Data_Entry_2017.csv
  whose "Finding Labels" are the digit names ("zero" .. "nine") and one patient per image (so the
  patient-level split of `prepare` is an image-level stratified split); a `rare` digit can be cut to
  `rare_n` images, as the rare class of an imbalanced set.
- `to_8x8`: any square uint8 image back to 8x8 by averaging 8x8-block areas, the same way for real and
  generated images, so the reader and P/R compare like with like.
- `DigitReader`: a logistic regression on those 8x8 pixels, trained on the real digits: it knows nothing
  of the GANs or the embedder, so "read as the intended digit" is an outside opinion.
- `precision_recall`: improved precision/recall (Kynkaenniemi et al. 2019) with k-NN radii, on 8x8 pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cxraug.data.demo import NIH_HEADER

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digits_8x8(digits=range(10)) -> tuple[np.ndarray, np.ndarray]:
    """The real digits of these classes: uint8 images [N, 8, 8] (0..255) and their digit values [N]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = np.isin(data.target, list(digits))
    images = np.round(data.images[keep] * (255 / 16)).astype(np.uint8)
    return images, data.target[keep]


def upscale(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [N, 8, 8] -> uint8 [N, size, size], bilinear (smooth strokes a GAN can learn)."""
    resample = Image.Resampling.BILINEAR
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), resample)) for a in images])


def to_8x8(images) -> np.ndarray:
    """uint8 images [N, S, S] (numpy or torch, S a multiple of 8) -> float [N, 64] in [0, 1] (block means)."""
    x = torch.as_tensor(np.asarray(images)).float()[:, None] / 255
    return F.adaptive_avg_pool2d(x, 8).flatten(1).numpy()


def write_digits_nih(
    root: Path,
    digits=range(5),
    rare: int | None = None,
    rare_n: int = 40,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """The digits as root/images/*.png + root/Data_Entry_2017.csv; `rare` keeps `rare_n` random images."""
    images, labels = digits_8x8(digits)
    rng = np.random.default_rng(seed)
    if rare is not None:
        rows = np.flatnonzero(labels == rare)
        drop = rng.permutation(rows)[rare_n:]
        images, labels = np.delete(images, drop, 0), np.delete(labels, drop)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [NIH_HEADER]
    for i, (image, label) in enumerate(zip(upscale(images, size), labels, strict=True)):
        name, patient = f"{i + 1:08d}_000.png", i + 1
        Image.fromarray(image, mode="L").save(folder / name)
        lines.append(f"{name},{DIGIT_NAMES[label]},0,{patient},40,M,PA,{size},{size},0.143,0.143")
    (root / "Data_Entry_2017.csv").write_text("\n".join(lines) + "\n")
    return root


def class_names(digits=range(5)) -> list[str]:
    return [DIGIT_NAMES[d] for d in digits]


class DigitReader:
    """Which digit an image shows, by a logistic regression on its 8x8 block means (fit on real digits
    that went through the same upscale-then-average path as the dataset's images)."""

    def __init__(self, digits=range(10), size: int = 64, held_out: np.ndarray | None = None) -> None:
        """`held_out`: a bool mask over digits_8x8(digits) of rows not to fit on (to test the reader)."""
        from sklearn.linear_model import LogisticRegression

        images, labels = digits_8x8(digits)
        keep = np.ones(len(labels), bool) if held_out is None else ~held_out
        self.digits = sorted(set(labels.tolist()))
        self.model = LogisticRegression(max_iter=2000).fit(to_8x8(upscale(images[keep], size)), labels[keep])

    def read(self, images) -> np.ndarray:
        """Digit values [N] of uint8 images [N, S, S]."""
        return self.model.predict(to_8x8(images))


def _kth_radius(x: np.ndarray, k: int) -> np.ndarray:
    d = torch.cdist(torch.as_tensor(x), torch.as_tensor(x))
    return d.kthvalue(k + 1, dim=1).values.numpy()  # k + 1: the point itself is at distance 0


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision (share of fake samples inside the k-NN ball of some real sample) and recall
    (share of real samples inside the k-NN ball of some fake sample), on feature rows [N, D]."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    between = torch.cdist(torch.as_tensor(fake), torch.as_tensor(real)).numpy()  # [fake, real]
    precision = (between <= _kth_radius(real, k)[None, :]).any(1).mean()
    recall = (between <= _kth_radius(fake, k)[:, None]).any(0).mean()
    return float(precision), float(recall)


def digit_report(samples: dict[int, np.ndarray], reader: DigitReader, k: int = 3) -> dict[str, dict]:
    """Per intended digit: the share the reader reads as it, and P/R against all its real digits."""
    out = {}
    for digit, images in samples.items():
        real, _ = digits_8x8([digit])
        p, r = precision_recall(to_8x8(upscale(real, np.asarray(images).shape[-1])), to_8x8(images), k)
        read = reader.read(images)
        out[DIGIT_NAMES[digit]] = {
            "read_as_intended": round(float((read == digit).mean()), 3),
            "precision": round(p, 3),
            "recall": round(r, 3),
            "n": int(len(images)),
        }
    return out
