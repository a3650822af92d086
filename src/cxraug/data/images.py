"""Decode any X-ray image file to an 8-bit grayscale square array at the training size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImage(Exception):
    """The file cannot be decoded; `reason` is the key it is counted under in metrics/prepare.json."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def to_gray8(image: Image.Image) -> Image.Image:
    """8-bit grayscale from any mode: high-bit-depth images are stretched over their own range."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("L")


def resize_square(image: Image.Image, size: int) -> np.ndarray:
    """Antialiased resize to size x size (NIH frames are square; others are stretched, not cropped)."""
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(image, dtype=np.uint8)


def load_gray(path: str | Path, size: int) -> np.ndarray:
    """uint8 [size, size]; raises BadImage('unreadable' | 'truncated') for files that cannot be used."""
    try:
        with Image.open(path) as image:
            image.load()
            return resize_square(to_gray8(image), size)
    except FileNotFoundError:
        raise BadImage("missing", str(path)) from None
    except (UnidentifiedImageError, SyntaxError) as e:
        raise BadImage("unreadable", f"{path}: {e}") from None
    except OSError as e:  # Pillow reports truncated data as OSError
        reason = "truncated" if "truncat" in str(e).lower() else "unreadable"
        raise BadImage(reason, f"{path}: {e}") from None
