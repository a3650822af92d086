"""The digits fixture of the generators' quality gate: the NIH-layout folder, the reader, P/R."""

import numpy as np

from cxraug.core.config import PrepareParams
from cxraug.data.datasets import load_split
from cxraug.data.prepare import prepare
from tests.fixtures_digits import (
    DigitReader,
    class_names,
    digit_report,
    digits_8x8,
    precision_recall,
    to_8x8,
    upscale,
    write_digits_nih,
)


def test_digits_become_a_prepared_nih_dataset_with_the_rare_digit_cut(tmp_path, tracking_uri):
    raw = write_digits_nih(tmp_path / "raw", digits=range(5), rare=4, rare_n=40)
    params = PrepareParams(classes=class_names(), image_size=64, workers=1)  # no process pool to start
    prepare(params, raw, tmp_path / "p", tmp_path / "p.json")
    splits = [load_split(tmp_path / "p", s) for s in ("train", "val", "test")]
    assert splits[0].classes == ("zero", "one", "two", "three", "four")
    counts = sum(np.bincount(s.labels.numpy(), minlength=5) for s in splits)
    real = np.bincount(digits_8x8(range(5))[1])
    assert counts[4] == 40 and (counts[:4] == real[:4]).all()
    # the prepared pixels are the fixture's: upscaled digits, read back at 8x8 as the originals
    train = splits[0]
    reader = DigitReader(range(5))
    assert (reader.read(train.images.numpy()) == train.labels.numpy()).mean() > 0.97


def test_the_reader_reads_unseen_real_digits_and_pr_separates_digits_from_noise():
    images, labels = digits_8x8(range(10))
    held_out = np.random.default_rng(0).random(len(labels)) < 0.3
    reader = DigitReader(range(10), held_out=held_out)
    big = upscale(images[held_out], 64)
    assert (reader.read(big) == labels[held_out]).mean() > 0.9  # an independent judge worth asking
    back = to_8x8(upscale(images, 64))  # near the originals (bilinear blurs a little; mean pixel 0.31)
    assert np.abs(back - images.reshape(len(images), -1) / 255).mean() < 0.1
    threes = to_8x8(upscale(images[labels == 3], 64))
    p, r = precision_recall(threes[::2], threes[1::2])
    assert p > 0.7 and r > 0.7  # two halves of one class cover each other
    noise = np.random.default_rng(1).random((90, 64))
    assert precision_recall(threes, noise)[0] == 0  # nothing like a three
    grey = 0.5 + 0.01 * noise  # a tight cluster far from every three: neither precise nor covering
    assert precision_recall(threes, grey) == (0, 0)
    collapsed = np.repeat(threes[:1], 90, 0)  # one image 90 times: precise, no recall
    p, r = precision_recall(threes, collapsed)
    assert p == 1 and r < 0.1
    report = digit_report({3: upscale(images[labels == 3], 64)}, reader)
    assert report["three"]["read_as_intended"] > 0.9 and report["three"]["precision"] == 1
