"""Reading an external validation set in each layout, and the guard against the study's own images."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxraug.core.config import PrepareParams
from cxraug.core.errors import CxraugError
from cxraug.data.datasets import load_split
from cxraug.data.external import SKIP_REASONS, check_no_overlap, read_external
from cxraug.data.images import load_gray
from cxraug.data.prepare import prepare
from tests.data.external_layouts import (
    CLASSES,
    SIZE,
    build_folders,
    build_medmnist,
    build_nih,
    medmnist_reference,
    random_image,
)


def _labels_from_nih_csv(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {row["Image Index"]: row["Finding Labels"] for row in csv.DictReader(f)}


def _check_counts(external, layout) -> None:
    assert external.skipped == {r: layout.skipped.get(r, 0) for r in SKIP_REASONS}


@pytest.fixture(scope="module")
def study(tmp_path_factory, tracking_uri):
    """An NIH-layout raw directory and what `prepare` makes of it at SIZE px."""
    root = tmp_path_factory.mktemp("study")
    layout = build_nih(root / "raw")
    prepare(
        PrepareParams(classes=list(CLASSES), image_size=SIZE), layout.path, root / "prepared", root / "m.json"
    )
    return layout, root / "prepared"


def test_nih_layout_reads_every_single_label_study_image(tmp_path):
    layout = build_nih(tmp_path / "ext")
    external = read_external(layout.path, CLASSES, SIZE)
    assert external.layout == "nih" and external.images.shape == (len(layout.expected), SIZE, SIZE)
    assert external.images.dtype == np.uint8
    assert sorted(external.image_index) == sorted(layout.expected)
    truth = _labels_from_nih_csv(layout.path / "Data_Entry_2017.csv")
    assert [CLASSES[k] for k in external.labels] == [truth[i] for i in external.image_index]
    assert list(external.patient_ids) == [layout.patients[i] for i in external.image_index]
    _check_counts(external, layout)
    assert external.other_classes == {"Mass": 2}
    assert external.bootstrap_unit == "patient" and external.absent_classes == []
    assert all(Path(f).name == i for f, i in zip(external.files, external.image_index, strict=True))


def test_nih_images_equal_what_prepare_makes_of_the_same_files(study):
    layout, prepared = study
    external = read_external(layout.path, CLASSES, SIZE)
    position = {index: i for i, index in enumerate(external.image_index)}
    seen = 0
    for name in ("train", "val", "test"):
        split = load_split(prepared, name)
        for j, index in enumerate(split.image_index):
            i = position[str(index)]
            assert np.array_equal(external.images[i], split.images[j].numpy()), index
            assert external.labels[i] == int(split.labels[j])
            seen += 1
    assert seen == len(external)  # prepare kept and skipped exactly the same images


def test_folder_layout_labels_conversion_and_skips(tmp_path):
    layout = build_folders(tmp_path / "ext")
    modes = {Image.open(layout.path / rel).mode for rel in layout.expected}
    assert {"L", "RGB", "RGBA"} <= modes and modes & {"I;16", "I"}  # the fixture varies what it should
    external = read_external(layout.path, CLASSES, SIZE)
    assert external.layout == "folders" and sorted(external.image_index) == sorted(layout.expected)
    for i, index in enumerate(external.image_index):
        assert CLASSES[external.labels[i]] == Path(index).parts[0]
        assert np.array_equal(external.images[i], load_gray(layout.path / index, SIZE)), index
    _check_counts(external, layout)
    assert external.other_classes == {"Mass": 2}
    assert external.patient_ids is None and external.bootstrap_unit == "image"
    assert len(set(external.bootstrap_ids)) == len(external)


@pytest.mark.parametrize("as_file", [False, True])
def test_medmnist_npz_every_split_converted_like_prepare(tmp_path, as_file):
    layout = build_medmnist(tmp_path / "ext" / "chestmnist_64.npz")
    external = read_external(layout.path if as_file else layout.path.parent, CLASSES, SIZE)
    assert external.layout == "medmnist" and sorted(external.image_index) == sorted(layout.expected)
    npz = np.load(layout.path)
    for i, index in enumerate(external.image_index):
        split, row = index.split("/")
        columns = np.flatnonzero(npz[f"{split}_labels"][int(row)])
        assert CLASSES[external.labels[i]] == layout.expected[index]
        assert (external.labels[i] == 0) == (len(columns) == 0)
        assert np.array_equal(external.images[i], medmnist_reference(layout.path, index, SIZE))
    _check_counts(external, layout)
    assert external.patient_ids is None and external.bootstrap_unit == "image"
    assert str(layout.path) in external.describe(0)


def test_a_study_class_missing_from_the_set_is_reported(tmp_path):
    layout = build_folders(tmp_path / "ext", classes=CLASSES[:2])
    external = read_external(layout.path, CLASSES, SIZE)
    assert external.absent_classes == ["Nodule"] and external.present_classes == list(CLASSES[:2])
    assert external.counts()["Nodule"] == 0


def _folder_set(root: Path, files: dict[str, bytes | None]) -> Path:
    rng = np.random.default_rng(1)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            random_image(rng, "L", (40, 40)).save(root / rel)
        else:
            (root / rel).write_bytes(data)
    return root


@pytest.mark.parametrize(
    "files, expected",
    [
        (None, "no such directory"),
        ({"Mass/a.png": None, "Hernia/b.png": None}, "none of the study's classes"),
        ({"Effusion/a.png": b"junk", "Nodule/b.png": b"junk"}, "no readable images"),
        ({"effusion/a.png": None, "Nodule/b.png": None}, "rename it to 'Effusion'"),
        ({"No_Finding/a.png": None, "Nodule/b.png": None}, "rename it to 'No Finding'"),
        ({"Effusion/a.png": None, "Mass/b.png": None}, "at least two"),
        ({"notes.txt": b"x"}, "no class folders with images"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, files, expected):
    root = tmp_path / "ext"
    if files is not None:
        _folder_set(root, files)
    with pytest.raises(CxraugError) as e:
        read_external(root, CLASSES, SIZE)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_a_file_that_is_no_npz_is_a_one_line_error(tmp_path):
    (tmp_path / "list.csv").write_text("a,b\n")
    with pytest.raises(CxraugError, match="not an npz"):
        read_external(tmp_path / "list.csv", CLASSES, SIZE)


# ----------------------------------------------------------------------------------------------- overlap


def test_guard_names_a_copied_training_image_by_its_pixels(study, tmp_path):
    layout, prepared = study
    train = load_split(prepared, "train")
    ext = build_folders(tmp_path / "ext").path
    source = next(layout.path.rglob(str(train.image_index[3])))
    shutil.copy(source, ext / "Nodule" / "renamed.png")
    external = read_external(ext, CLASSES, SIZE)
    with pytest.raises(CxraugError) as e:
        check_no_overlap(external, train)
    message = str(e.value)
    assert message.startswith(str(ext / "Nodule" / "renamed.png")) and "same pixels" in message
    assert str(train.image_index[3]) in message and "\n" not in message


def test_guard_names_an_image_with_a_training_image_index(study, tmp_path):
    layout, prepared = study
    train = load_split(prepared, "train")
    ext = build_nih(tmp_path / "ext", seed=7)  # the same Image Index names with other pixels
    external = read_external(ext.path, CLASSES, SIZE)
    assert not set(external.pixel_md5) & {str(m) for m in read_external(layout.path, CLASSES, SIZE).pixel_md5}
    with pytest.raises(CxraugError, match="Image Index of train image") as e:
        check_no_overlap(external, train)
    assert Path(str(e.value).split(":")[0]).name in set(train.image_index)


def test_guard_checks_other_splits_and_passes_a_disjoint_set(study, tmp_path):
    layout, prepared = study
    train, test = load_split(prepared, "train"), load_split(prepared, "test")
    ext = build_folders(tmp_path / "ext", seed=5).path
    external = read_external(ext, CLASSES, SIZE)
    check_no_overlap(external, train, {"test": test})  # nothing shared: no error
    shutil.copy(next(layout.path.rglob(str(test.image_index[0]))), ext / "Effusion" / "from_test.png")
    with pytest.raises(CxraugError, match="same pixels as test image"):
        check_no_overlap(read_external(ext, CLASSES, SIZE), train, {"test": test})
    with pytest.raises(CxraugError, match="16 px"):
        check_no_overlap(read_external(ext, CLASSES, 16), train)


def test_metadata_rows_without_files_are_named_in_the_error(tmp_path):
    layout = build_nih(tmp_path / "ext")
    for image in layout.path.rglob("*.png"):
        image.unlink()
    listed = len(layout.expected) + 3  # + the corrupt, the truncated and the one never written
    with pytest.raises(
        CxraugError, match=rf"has images there \({listed} listed without their file below it\)"
    ):
        read_external(layout.path, CLASSES, SIZE)
