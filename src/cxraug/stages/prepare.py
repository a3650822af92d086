"""`prepare` stage: single-label images of the study's classes, split by patient, as uint8 arrays
(the work is data/prepare.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult
from cxraug.data.prepare import prepare

STAGE = "prepare"


@dataclass(frozen=True)
class Paths:
    raw: Path = layout.RAW
    out: Path = layout.PREPARED
    metrics: Path = layout.stage_metrics(STAGE)


def run(params: Params, paths: Paths = Paths(), hooks: Hooks = NO_HOOKS) -> StageResult:
    result = prepare(params.prepare, paths.raw, paths.out, paths.metrics)
    per_split = ", ".join(f"{s} {sum(c.values()):,}" for s, c in result.counts.items())
    skipped = ", ".join(f"{k} {v:,}" for k, v in result.skipped.items() if v) or "none"
    summary = (
        f"prepared {result.images:,} images of {result.patients:,} patients ({per_split}) "
        f"in {result.seconds:.1f}s, {result.images_per_second:,.0f} img/s; skipped: {skipped}"
    )
    outputs = (
        *(paths.out / f"{s}.npz" for s in ("train", "val", "test")),
        paths.out / "split.csv",
        paths.metrics,
    )
    metrics = {"counts": result.counts, "skipped": result.skipped, "images": result.images}
    return StageResult(STAGE, summary, outputs, result.run_id, metrics, result)
