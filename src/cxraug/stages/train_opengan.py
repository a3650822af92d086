"""`train_opengan` stage: the OpenGAN-style generator conditioned on the frozen embedder (gans/opengan/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult, replicate_section
from cxraug.gans.opengan.train import train_opengan

STAGE = "train_opengan"


@dataclass(frozen=True)
class Paths:
    prepared: Path = layout.PREPARED
    embedder: Path = layout.EMBEDDER
    out: Path = layout.model_dir("opengan")
    metrics: Path = layout.replicate_metrics(STAGE, 0)
    checkpoints: Path = layout.checkpoints(STAGE, 0)
    seed: int | None = None  # the generator replicate (replicates.generator_seeds); None: the section's seed


def run(params: Params, paths: Paths = Paths(), hooks: Hooks = NO_HOOKS) -> StageResult:
    result = train_opengan(
        replicate_section(params.train_opengan, paths.seed),
        paths.prepared,
        paths.embedder,
        paths.out,
        paths.metrics,
        paths.checkpoints,
        hooks,
    )
    if not result.summary:  # torchrun ranks > 0 report nothing
        return StageResult(STAGE, "", (), result.run_id, {}, result)
    agreement = ", ".join(f"{c} {v['prototype_accuracy']:.2f}" for c, v in result.summary["samples"].items())
    summary = (
        f"opengan: {result.steps} steps in {result.seconds:.1f}s ({result.steps_per_second:.2f} steps/s); "
        f"samples nearest their class prototype: {agreement}"
    )
    return StageResult(STAGE, summary, (paths.out, paths.metrics), result.run_id, result.summary, result)
