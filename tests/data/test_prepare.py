import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxraug.core.config import PrepareParams
from cxraug.core.errors import CxraugError
from cxraug.data.datasets import load_split
from cxraug.data.images import load_gray
from cxraug.data.prepare import prepare
from tests.helpers import balanced_rows, write_nih

CLASSES = ["No Finding", "Infiltration", "Atelectasis", "Effusion", "Nodule"]


def _run(raw, tmp_path, **overrides):
    params = PrepareParams(**overrides)
    out, metrics = tmp_path / "prepared", tmp_path / "metrics.json"
    return prepare(params, raw, out, metrics), out, metrics


def _all_splits(out):
    return {s: load_split(out, s) for s in ("train", "val", "test")}


def test_real_subset_keeps_727_images_without_patient_leakage(nih_subset, tmp_path, tracking_uri):
    result, out, _ = _run(nih_subset, tmp_path)
    splits = _all_splits(out)
    per_class = sum(split.class_counts() for split in splits.values())
    assert per_class.tolist() == [536, 67, 34, 67, 23]
    assert result.images == 727
    patients = {s: set(split.patient_ids) for s, split in splits.items()}
    assert not (
        patients["train"] & patients["val"]
        or patients["train"] & patients["test"]
        or patients["val"] & patients["test"]
    )
    for split in splits.values():
        assert split.images.dtype.is_floating_point is False and split.images.shape[1:] == (64, 64)
        assert (split.class_counts() > 0).all()
    table = pd.read_csv(out / "split.csv", dtype=str)
    assert len(table) == 727 and table.groupby("patient_id")["split"].nunique().max() == 1


def test_images_match_their_source_files(nih_subset, tmp_path, tracking_uri):
    _, out, _ = _run(nih_subset, tmp_path)
    test = load_split(out, "test")
    for i in (0, len(test) - 1):
        path = next(nih_subset.rglob(str(test.image_index[i])))
        assert np.array_equal(test.images[i].numpy(), load_gray(path, 64))
        assert (
            test.classes[int(test.labels[i])]
            == pd.read_csv(nih_subset / "Data_Entry_2017.csv")
            .set_index("Image Index")
            .loc[test.image_index[i], "Finding Labels"]
        )


def test_bad_files_are_counted_and_skipped_or_fail(tmp_path, tracking_uri):
    raw = write_nih(tmp_path / "raw", balanced_rows(CLASSES[:2], per_class=30, patients_per_class=15))
    files = sorted((raw / "images").glob("*.png"))
    files[0].write_bytes(files[0].read_bytes()[:60])  # truncated
    files[1].write_bytes(b"not an image at all")
    files[2].unlink()  # missing
    result, out, metrics = _run(raw, tmp_path, classes=CLASSES[:2])
    assert result.skipped["missing"] == 1
    assert result.skipped["truncated"] + result.skipped["unreadable"] == 2
    assert result.images == 57
    assert '"missing": 1' in metrics.read_text()
    with pytest.raises(CxraugError, match="on_bad_image: skip"):
        _run(raw, tmp_path, classes=CLASSES[:2], on_bad_image="fail")


def test_any_input_mode_and_size_becomes_8bit_gray_at_image_size(tmp_path):
    gray = np.tile(np.linspace(0, 255, 200).astype(np.uint8), (200, 1))
    Image.fromarray(np.stack([gray] * 3, -1), mode="RGB").save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([gray] * 3 + [np.full_like(gray, 255)]), mode="RGBA").save(
        tmp_path / "rgba.png"
    )
    Image.fromarray(gray.astype(np.uint16) * 16 + 1000).save(tmp_path / "sixteen.png")
    Image.fromarray(gray, mode="L").save(tmp_path / "gray.png")
    reference = load_gray(tmp_path / "gray.png", 64)
    for name in ("rgb", "rgba", "sixteen"):
        out = load_gray(tmp_path / f"{name}.png", 64)
        assert out.dtype == np.uint8 and out.shape == (64, 64)
        assert np.abs(out.astype(int) - reference).max() <= 2, name
    assert Image.open(tmp_path / "sixteen.png").mode.startswith("I")


def test_unknown_class_lists_valid_labels_and_empty_class_fails(tmp_path, tracking_uri):
    raw = write_nih(tmp_path / "raw", balanced_rows(CLASSES[:2], 20, 10))
    with pytest.raises(CxraugError, match="'Pneumonia'.*valid labels: Infiltration, No Finding"):
        _run(raw, tmp_path, classes=["No Finding", "Pneumonia"])
    for f in (raw / "images").glob("00002*.png"):  # every Infiltration image unusable
        f.write_bytes(b"broken")
    with pytest.raises(CxraugError, match="'Infiltration' has no usable images"):
        _run(raw, tmp_path, classes=CLASSES[:2])


def test_official_split_puts_exactly_the_test_list_in_test(demo_raw, tmp_path, tracking_uri):
    _, out, metrics = _run(demo_raw, tmp_path, use_official_split=True)
    official_test = set((demo_raw / "test_list.txt").read_text().split())
    splits = _all_splits(out)
    # exactly: every single-label image of the chosen classes on the official list, and nothing else
    meta = pd.read_csv(demo_raw / "Data_Entry_2017.csv")
    eligible = set(meta.loc[meta["Finding Labels"].isin(CLASSES), "Image Index"])
    assert set(splits["test"].image_index) == official_test & eligible
    assert len(official_test & eligible) > 0
    assert not (set(splits["train"].image_index) | set(splits["val"].image_index)) & official_test
    assert "nih-official-test" in metrics.read_text()


def test_official_split_without_lists_is_an_error(tmp_path, tracking_uri):
    raw = write_nih(tmp_path / "raw", balanced_rows(CLASSES[:2], 20, 10))
    with pytest.raises(CxraugError, match="test_list.txt"):
        _run(raw, tmp_path, classes=CLASSES[:2], use_official_split=True)


def test_cap_per_class_and_determinism(demo_raw, tmp_path, tracking_uri):
    result, out, _ = _run(demo_raw, tmp_path / "a", max_per_class=60, seed=5)
    counts = sum(s.class_counts() for s in _all_splits(out).values())
    assert counts.max() == 60 and result.skipped["over_cap"] > 0
    _, again, _ = _run(demo_raw, tmp_path / "b", max_per_class=60, seed=5)
    for s in ("train", "val", "test"):
        assert np.array_equal(load_split(out, s).image_index, load_split(again, s).image_index)


def test_medmnist_npz_uses_its_own_splits(tmp_path, tracking_uri):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 60), ("val", 20), ("test", 20)):
        labels = np.zeros((n, 14), dtype=np.uint8)
        labels[np.arange(n) % 2 == 1, 5] = 1  # odd rows Nodule, even rows No Finding
        arrays[f"{split}_labels"] = labels
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
    np.savez(tmp_path / "chestmnist_64.npz", **arrays)
    result, out, _ = _run(tmp_path, tmp_path, classes=["No Finding", "Nodule"])
    splits = _all_splits(out)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [60, 20, 20]
    assert np.array_equal(splits["val"].images.numpy(), arrays["val_images"])
    assert splits["train"].labels.tolist() == [0, 1] * 30
