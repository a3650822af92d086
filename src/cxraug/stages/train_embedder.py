"""`train_embedder` stage: the frozen metric-learning embedder OpenGAN conditions on (gans/opengan/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult, replicate_section
from cxraug.gans.opengan.train_embedder import train_embedder

STAGE = "train_embedder"


@dataclass(frozen=True)
class Paths:
    prepared: Path = layout.PREPARED
    out: Path = layout.EMBEDDER
    metrics: Path = layout.replicate_metrics(STAGE, 0)
    checkpoints: Path = layout.checkpoints(STAGE, 0)
    seed: int | None = None  # the generator replicate (replicates.generator_seeds); None: the section's seed


def run(params: Params, paths: Paths = Paths(), hooks: Hooks = NO_HOOKS) -> StageResult:
    result = train_embedder(
        replicate_section(params.train_embedder, paths.seed),
        paths.prepared,
        paths.out,
        paths.metrics,
        paths.checkpoints,
        hooks,
    )
    r = result.retrieval
    if r is None:  # torchrun ranks > 0 report nothing
        return StageResult(STAGE, "", (), result.run_id, {}, result)
    summary = (
        f"embedder: val k-NN accuracy {r.knn_accuracy:.3f} (balanced {r.knn_balanced_accuracy:.3f}, "
        f"majority class {r.majority_rate:.3f}), recall@1 {r.recall_at_1:.3f}; {result.steps} steps in "
        f"{result.seconds:.1f}s ({result.images_per_second:,.0f} img/s)"
    )
    metrics = {"knn_accuracy": r.knn_accuracy, "recall_at_1": r.recall_at_1, "steps": result.steps}
    return StageResult(STAGE, summary, (paths.out, paths.metrics), result.run_id, metrics, result)
