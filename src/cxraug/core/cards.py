"""Image grids drawn for MLflow's image cards (the run page's per-step sliders).

MLflow 3.17 draws a card as a square box, as wide as the chart column (about 130 px in a 1440-px
window with the run page's default layout), holding a thumbnail of at most 256 px a side scaled to fit;
the full image opens only on click. A wide grid with figure-sized labels is a thin, unreadable strip
there. A card grid is square instead, and its words are big enough to read at card size: the title on
top, then per row its label on a line of its own above the row's images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

CARD_SIDE = 768  # px of the logged image; shown at ~130 px, so 1 card px ~ 6 image px
TITLE_EM, LABEL_EM = 0.050, 0.058  # font sizes as a share of the side: ~6.5 and ~7.5 px at card size
TITLE_BAND, LABEL_BAND, MARGIN = 0.080, 0.072, 0.02  # heights as a share of the side


def to_uint8_grid(images: torch.Tensor | np.ndarray, nrow: int = 8, padding: int = 2) -> np.ndarray:
    """A [H, W] uint8 grid from uint8 images [N, H, W] / [N, 1, H, W] or floats in [-1, 1]: `nrow` a row,
    `padding` white pixels around each, as torchvision's make_grid draws it (one image: unpadded). Not
    make_grid itself: importing torchvision cost ~3 s of every stage that logs a grid."""
    x = torch.as_tensor(images).detach().cpu()
    if x.ndim == 4:
        x = x[:, 0]
    if x.dtype != torch.uint8:
        x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    if len(x) == 1:
        return x[0].numpy()
    n, h, w = x.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.full(
        (rows * (h + padding) + padding, cols * (w + padding) + padding), 255, dtype=torch.uint8
    )
    for i in range(n):
        row, col = divmod(i, cols)
        top, left = padding + row * (h + padding), padding + col * (w + padding)
        grid[top : top + h, left : left + w] = x[i]
    return grid.numpy()


def _points(share: float, side: int, dpi: int) -> float:
    """A font size in points whose em is `share` of the side (matplotlib sizes fonts in points)."""
    return share * side * 72 / dpi


def _fit(text, points: float, width: float, renderer) -> None:
    """Set `text` in `points`, smaller where it would be wider than `width` px (a long title)."""
    text.set_fontsize(points)
    drawn = text.get_window_extent(renderer=renderer).width
    if drawn > width:
        text.set_fontsize(points * width / drawn)


def card_grid(
    rows: Sequence[torch.Tensor | np.ndarray], row_labels: Sequence[str], title: str, side: int = CARD_SIDE
) -> np.ndarray:
    """A square RGB uint8 image: `title`, then each row of images under its label, every image the same
    size, as large as the square allows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if len(rows) != len(row_labels) or not rows:
        raise ValueError(f"{len(rows)} rows for {len(row_labels)} labels")
    dpi, n, cols = 100, len(rows), max(len(r) for r in rows)
    title_h, label_h, margin = TITLE_BAND * side, LABEL_BAND * side, MARGIN * side
    cell = min((side - 2 * margin) / cols, (side - title_h - n * label_h - margin) / n)
    x0 = (side - cols * cell) / 2
    fig = plt.figure(figsize=(side / dpi, side / dpi), dpi=dpi, facecolor="white")
    renderer = fig.canvas.get_renderer()
    heading = fig.text(0.5, 1 - title_h / 2 / side, title, ha="center", va="center")
    _fit(heading, _points(TITLE_EM, side, dpi), side - 2 * margin, renderer)
    top = side - title_h
    for row, label in zip(rows, row_labels, strict=True):
        name = fig.text(
            x0 / side, (top - label_h / 2) / side, label, ha="left", va="center", fontweight="bold"
        )
        _fit(name, _points(LABEL_EM, side, dpi), side - x0 - margin, renderer)
        top -= label_h + cell
        ax = fig.add_axes((x0 / side, top / side, cell * len(row) / side, cell / side))
        strip = to_uint8_grid(row, nrow=max(1, len(row)), padding=1)
        ax.imshow(strip, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="auto")
        ax.set_axis_off()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image
