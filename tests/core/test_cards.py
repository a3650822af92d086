"""The square grids logged to MLflow's image sliders: readable at the size MLflow draws a card."""

import numpy as np
import pytest
import torch

from cxraug.core.cards import CARD_SIDE, card_grid, to_uint8_grid

CARD_PX = 131  # the card's width in MLflow 3.17 at 1440 px (tests/ui screenshots)
CLASSES = ["no_finding", "infiltration", "atelectasis", "effusion", "nodule"]


def _runs(line: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, start, length) of each run of equal values along a 1-D array."""
    edges = np.flatnonzero(np.diff(line)) + 1
    starts = np.r_[0, edges]
    return [(int(line[a]), int(a), int(b - a)) for a, b in zip(starts, np.r_[edges, len(line)], strict=True)]


def test_rows_fill_a_square_in_order_with_images_large_at_card_size():
    grays = [0, 60, 120, 180, 40]  # one flat gray per class row: find each row on the canvas
    rows = [torch.full((8, 1, 32, 32), g, dtype=torch.uint8) for g in grays]
    image = card_grid(rows, CLASSES, "BAGAN samples, epoch 12 of 40")
    assert image.shape == (CARD_SIDE, CARD_SIDE, 3) and image.dtype == np.uint8

    gray = image[..., 0].astype(int)
    middle = _runs(gray[:, CARD_SIDE // 2 + 7])  # straight down through every row's images
    blocks = [(v, start, n) for v, start, n in middle if v < 250 and n > 20]
    assert np.allclose([v for v, _, _ in blocks], grays, atol=2)  # class rows top to bottom, as given
    cell = min(n for _, _, n in blocks)
    assert cell * CARD_PX / CARD_SIDE >= 12  # an image at least 12 card px tall
    across = [n for v, _, n in _runs(gray[blocks[0][1] + cell // 2]) if v == blocks[0][0] and n > 20]
    assert len(across) == 8 and max(across) - min(across) <= 2  # 8 images side by side, square cells
    assert abs(across[0] - cell) <= 2
    used = (gray[blocks[0][1] : blocks[-1][1] + cell] < 250).any(axis=0)
    assert used.sum() > 0.8 * CARD_SIDE  # the rows span the card's width: no thin strip


def test_labels_are_drawn_large_enough_to_read_at_card_size():
    rows = [torch.full((4, 1, 32, 32), 255, dtype=torch.uint8) for _ in CLASSES]  # white: only text is ink
    image = card_grid(rows, CLASSES, "title")
    ink = (image[..., 0] < 128).any(axis=1)
    text_lines = [n for v, _, n in _runs(ink.astype(int)) if v == 1]
    assert len(text_lines) == 1 + len(CLASSES)  # the title and one line per class
    label_height = min(text_lines[1:]) * CARD_PX / CARD_SIDE
    assert label_height >= 5, label_height  # "no_finding": cap and descender span >= 5 card px


def test_a_label_per_row():
    with pytest.raises(ValueError, match="2 rows for 1 labels"):
        card_grid([torch.zeros(2, 1, 8, 8)] * 2, ["one"], "title")


def test_a_long_title_or_label_is_shrunk_to_fit_not_cut_off():
    rows = [torch.full((16, 1, 32, 32), 255, dtype=torch.uint8) for _ in CLASSES]
    labels = [f"{name}: 8 real, then decoded" for name in CLASSES]
    image = card_grid(rows, labels, "autoencoder reconstructions before training, epoch 0 of 3 epochs")
    ink_columns = np.flatnonzero((image[..., 0] < 128).any(axis=0))
    assert ink_columns.min() > 0 and ink_columns.max() < CARD_SIDE - 1  # no text runs off either edge


@pytest.mark.parametrize("n, nrow, padding", [(1, 8, 2), (3, 8, 2), (8, 8, 2), (13, 4, 1), (16, 8, 0)])
def test_the_grid_is_torchvisions_make_grid_without_importing_torchvision(n, nrow, padding):
    from torchvision.utils import make_grid

    g = torch.Generator().manual_seed(n)
    uint8 = torch.randint(0, 256, (n, 1, 5, 7), dtype=torch.uint8, generator=g)
    floats = torch.rand(n, 5, 7, generator=g) * 2.4 - 1.2  # beyond [-1, 1]: clamped
    for images in (uint8, uint8[:, 0].numpy(), floats):
        x = torch.as_tensor(images).reshape(n, 1, 5, 7)
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.clamp(-1, 1)
        expected = ((make_grid(x, nrow=nrow, padding=padding, pad_value=1.0)[0] + 1) * 127.5).round()
        np.testing.assert_array_equal(
            to_uint8_grid(images, nrow=nrow, padding=padding), expected.byte().numpy()
        )
