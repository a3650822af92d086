import gzip

import numpy as np
import pytest

from cxraug.core.errors import CxraugError
from cxraug.data.sources import MEDMNIST_LABELS, read_source
from tests.helpers import write_nih


def test_nih_csv_with_eleven_fields_and_images_in_nested_archive_folders(tmp_path):
    write_nih(tmp_path, [("00000001_000.png", "Nodule", "1")], subdir="images_001/images")
    write_nih(
        tmp_path,
        [("00000002_000.png", "Effusion|Nodule", "2")],
        subdir="images_002/images",
        metadata_name="unused.csv",
    )
    csv = (tmp_path / "Data_Entry_2017.csv").read_text().splitlines()
    assert csv[0].count(",") == 10  # 9 names, two of them containing a comma
    (tmp_path / "Data_Entry_2017.csv").write_text(
        "\n".join(
            [
                *csv,
                csv[1]
                .replace("00000001", "00000002")
                .replace("Nodule", "Effusion|Nodule")
                .replace(",1,", ",2,"),
            ]
        )
    )
    source = read_source(tmp_path)
    assert source.kind == "nih"
    rec = source.records.set_index("image_index")
    assert rec.loc["00000001_000.png", "path"].endswith("images_001/images/00000001_000.png")
    assert rec.loc["00000002_000.png", "path"].endswith("images_002/images/00000002_000.png")
    assert rec.loc["00000002_000.png", "finding_labels"] == "Effusion|Nodule"
    assert dict(source.single_label_counts()) == {"Nodule": 1}


def test_gzipped_v2020_metadata_is_preferred_and_duplicates_used_once(tmp_path):
    write_nih(tmp_path, [("00000001_000.png", "Nodule", "1")], metadata_name="Data_Entry_2017.csv")
    write_nih(
        tmp_path, [("00000001_000.png", "Nodule", "1")], subdir="images_002/images", metadata_name="x.csv"
    )
    text = (tmp_path / "Data_Entry_2017.csv").read_text()
    lines = text.splitlines()
    with gzip.open(tmp_path / "Data_Entry_2017_v2020.csv.gz", "wt") as f:
        f.write("\n".join([*lines, lines[1]]) + "\n")  # a repeated row
    source = read_source(tmp_path)
    assert source.metadata.name == "Data_Entry_2017_v2020.csv.gz"
    assert len(source.records) == 1
    assert source.duplicate_rows == 1
    assert source.duplicate_files == 1


def test_missing_columns_are_named(tmp_path):
    (tmp_path / "Data_Entry_2017.csv").write_text("Image Index,Labels\na.png,Nodule\n")
    with pytest.raises(CxraugError, match="missing column.*'Finding Labels'.*'Patient ID'"):
        read_source(tmp_path)


def test_missing_directory_and_wrong_layout_explain_the_expected_layout(tmp_path):
    with pytest.raises(CxraugError, match="no such directory.*Data_Entry_2017.csv"):
        read_source(tmp_path / "absent")
    with pytest.raises(CxraugError, match="no NIH metadata file found.*images_001/images"):
        read_source(tmp_path)


def test_official_lists_mark_test_images(tmp_path):
    write_nih(tmp_path, [("00000001_000.png", "Nodule", "1"), ("00000002_000.png", "Nodule", "2")])
    (tmp_path / "train_val_list.txt").write_text("00000001_000.png\n")
    (tmp_path / "test_list.txt").write_text("00000002_000.png\n")
    source = read_source(tmp_path)
    assert source.official_lists
    assert dict(zip(source.records.image_index, source.records.official_split, strict=True)) == {
        "00000001_000.png": "train_val",
        "00000002_000.png": "test",
    }


def test_medmnist_single_label_mapping(tmp_path):
    labels = np.zeros((4, 14), dtype=np.uint8)
    labels[1, MEDMNIST_LABELS.index("Nodule")] = 1
    labels[2, MEDMNIST_LABELS.index("Effusion")] = 1
    labels[2, MEDMNIST_LABELS.index("Infiltration")] = 1
    labels[3, MEDMNIST_LABELS.index("Pleural_Thickening")] = 1
    images = np.zeros((4, 64, 64), dtype=np.uint8)
    np.savez(
        tmp_path / "chestmnist_64.npz",
        **{f"{s}_images": images for s in ("train", "val", "test")},
        **{f"{s}_labels": labels for s in ("train", "val", "test")},
    )
    source = read_source(tmp_path, image_size=64)
    assert source.kind == "medmnist"
    train = source.records[source.records.official_split == "train"]
    assert list(train.finding_labels) == [
        "No Finding",
        "Nodule",
        "Effusion|Infiltration",
        "Pleural_Thickening",
    ]
    assert dict(source.single_label_counts()) == {"No Finding": 3, "Nodule": 3, "Pleural_Thickening": 3}
