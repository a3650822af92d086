"""`summary` stage: the short per-stage rows `dvc metrics show` prints (report/summary.py), written as
one JSON per stage output under metrics/summary/ (the only files dvc.yaml declares as metrics)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.runtime import atomic_dir, atomic_write_json
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult
from cxraug.report.summary import summary_rows

STAGE = "summary"


@dataclass(frozen=True)
class Paths:
    metrics: Path = layout.METRICS
    out: Path = layout.SUMMARY


def run(params: Params, paths: Paths = Paths(), hooks: Hooks = NO_HOOKS) -> StageResult:
    rows = summary_rows(paths.metrics)
    with atomic_dir(paths.out) as tmp:
        for name, row in rows.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(tmp / name, row)
    return StageResult(
        STAGE, f"summarised {len(rows)} metrics files for `dvc metrics show`", (paths.out,), None
    )
