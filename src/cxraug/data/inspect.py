"""`cxraug inspect`: what a data directory holds, without writing anything."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from cxraug.core.runtime import progress
from cxraug.data.sources import Source, read_source


@dataclass
class InspectReport:
    source: Source
    single_label_counts: dict[str, int]
    multi_label_images: int
    found: int
    missing: int
    unreadable: list[str] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)

    @property
    def patients(self) -> int:
        ids = self.source.records["patient_id"]
        return int(ids[ids != ""].nunique())


def probe_image(path: str) -> tuple[int, int] | None:
    """(width, height) of a file whose data is complete, None when it cannot be decoded."""
    try:
        with Image.open(path) as image:
            size = image.size
            image.verify()  # checks chunk CRCs and truncation without keeping the pixels
        return size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def inspect_source(path: str | Path) -> InspectReport:
    source = read_source(path)
    records = source.records
    counts = source.single_label_counts()
    report = InspectReport(
        source=source,
        single_label_counts={str(k): int(v) for k, v in counts.items()},
        multi_label_images=len(records) - int(counts.sum()),
        found=len(records),
        missing=0,
    )
    if source.kind == "medmnist":
        side = int(source.metadata.stem.rsplit("_", 1)[-1]) if "_" in source.metadata.stem else 28
        report.sizes[(side, side)] = len(records)
        return report
    paths = records.loc[records["path"] != "", "path"].tolist()
    report.found, report.missing = len(paths), len(records) - len(paths)
    for p in progress(paths, desc="check images", unit="img"):
        size = probe_image(p)
        if size is None:
            report.unreadable.append(p)
        else:
            report.sizes[size] += 1
    return report


def format_report(report: InspectReport, classes: list[str]) -> str:
    s = report.source
    lines = [
        f"source      {s.kind} ({s.metadata})",
        f"records     {len(s.records):,} images, {report.patients:,} patients",
        "official    "
        + ("train_val_list.txt + test_list.txt" if s.official_lists else "no official split lists"),
        "",
        "single-label counts (* = in params.yaml prepare.classes)",
    ]
    width = max(map(len, report.single_label_counts), default=10)
    for name, n in sorted(report.single_label_counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {'*' if name in classes else ' '} {name:<{width}} {n:>8,}")
    absent = [c for c in classes if c not in report.single_label_counts]
    if absent:
        lines.append(f"  ! not in the metadata: {', '.join(absent)}")
    lines += [f"  multi-label images: {report.multi_label_images:,}", ""]
    if s.kind == "nih":
        lines.append(
            f"images      {report.found:,} found, {report.missing:,} missing, "
            f"{len(report.unreadable):,} unreadable, {s.duplicate_files:,} duplicate files"
        )
        if report.found == 0:
            lines.append("            (metadata only: no image files below this directory)")
        for p in report.unreadable[:5]:
            lines.append(f"            unreadable: {p}")
    else:
        lines.append(f"images      {report.found:,} in {s.metadata.name}")
    if report.sizes:
        common = ", ".join(f"{w}x{h}: {n:,}" for (w, h), n in report.sizes.most_common(5))
        lines.append(f"sizes       {common}")
    return "\n".join(lines)
