"""The Generators section's reader sees a finding wherever it lies, where a linear reader cannot."""

import numpy as np
import torch

from cxraug.data.demo import _anatomy, render
from cxraug.report.reader import ImageReader


def phantoms(rng, labels):
    return np.stack([render(["Nodule"] if y else [], _anatomy(rng), rng, 64) for y in labels])


def test_the_reader_finds_the_rare_small_nodule_that_block_means_miss():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train_y = (np.arange(480) % 4 == 0).astype(int)  # Nodule a quarter of the images
    test_y = np.arange(200) % 2
    reader = ImageReader(phantoms(rng, train_y), train_y)
    read = reader.read(phantoms(rng, test_y))
    recall = [float((read[test_y == k] == k).mean()) for k in (0, 1)]
    assert min(recall) >= 0.7, recall


def test_the_same_images_give_the_same_reader():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 32, 32), dtype=np.uint8), np.arange(40) % 2
    a, b = ImageReader(x, y, min_steps=5), ImageReader(x, y, min_steps=5)
    probe = rng.integers(0, 256, (30, 32, 32), dtype=np.uint8)
    np.testing.assert_array_equal(a.read(probe), b.read(probe))
