from cxraug.core.config import DEFAULT_CLASSES
from cxraug.data.inspect import format_report, inspect_source
from tests.helpers import write_nih

PAPER_COUNTS = {
    "No Finding": 60361,
    "Infiltration": 9547,
    "Atelectasis": 4215,
    "Effusion": 3955,
    "Nodule": 2705,
}


def test_full_nih_metadata_counts_and_missing_images(nih_metadata):
    report = inspect_source(nih_metadata)
    assert {c: report.single_label_counts[c] for c in PAPER_COUNTS} == PAPER_COUNTS
    assert report.found == 0 and report.missing == 112_120
    assert report.patients == 30_805
    text = format_report(report, DEFAULT_CLASSES)
    assert "60,361" in text and "2,705" in text
    assert "0 found, 112,120 missing" in text


def test_real_subset_images_all_readable(nih_subset):
    report = inspect_source(nih_subset)
    assert report.found == 1051 and report.missing == 0 and report.unreadable == []
    assert report.sizes[(64, 64)] == 982


def test_corrupt_and_missing_files_are_reported(tmp_path):
    write_nih(
        tmp_path,
        [
            ("00000001_000.png", "Nodule", "1"),
            ("00000002_000.png", "Nodule", "2"),
            ("00000003_000.png", "Nodule", "3"),
        ],
    )
    data = (tmp_path / "images" / "00000002_000.png").read_bytes()
    (tmp_path / "images" / "00000002_000.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "images" / "00000003_000.png").unlink()
    report = inspect_source(tmp_path)
    assert (report.found, report.missing) == (2, 1)
    assert [p.rsplit("/", 1)[-1] for p in report.unreadable] == ["00000002_000.png"]
