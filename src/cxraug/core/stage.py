"""What every stage returns, and the hooks every training loop calls.

A stage module (`cxraug.stages.<stage>`) exposes `run(params, paths, hooks=None) -> StageResult`: the
CLI prints any result the same way, and tuning and benchmarks watch any generator through the same hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StageResult:
    stage: str  # the DVC stage name exactly as `dvc repro` takes it, e.g. "synthesize@bagan"
    summary: str  # one line: what was done, with the figures a user checks first
    outputs: tuple[Path, ...]
    run_id: str | None  # the MLflow run that holds everything the stage logged
    metrics: Mapping[str, Any] = field(default_factory=dict)
    detail: Any = None  # the stage's own result object (draws, per-seed results, ...) for library callers

    def lines(self) -> list[str]:
        wrote = ", ".join(str(p) for p in self.outputs)
        return [self.summary, f"wrote {wrote}" + (f"; MLflow run {self.run_id}" if self.run_id else "")]


@dataclass(frozen=True)
class EpochEnd:
    """What a training loop shows its `on_epoch` hook after each epoch of a phase. During the call the
    nets are in eval mode and `proposer` (GAN phases) samples from them as they are now."""

    phase: str  # "autoencoder", "gan", "embedder"
    epoch: int  # 1-based, within the phase
    nets: Mapping[str, Any]  # name -> torch module trained in this phase
    proposer: Any | None = None  # a cxraug.synthesis.draw.Proposer over the live nets


@dataclass(frozen=True)
class Hooks:
    """`on_step(phase, step, nets)` after every optimizer step (step counts from 1 within the phase; nets
    maps names to the modules being trained; benchmarks time loops with it, tests interrupt it);
    `on_epoch(EpochEnd)` after every epoch (tuning checks and prunes there)."""

    on_step: Callable[[str, int, Mapping[str, Any]], None] | None = None
    on_epoch: Callable[[EpochEnd], None] | None = None


NO_HOOKS = Hooks()


def replicate_section(section, seed: int | None):
    """A generator's params section with its seed set to that of replicate `seed` (None: unchanged)."""
    return section if seed is None else section.model_copy(update={"seed": seed})
