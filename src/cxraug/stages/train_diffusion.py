"""`train_diffusion` stage: the class-conditional diffusion model (gans/diffusion/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult, replicate_section
from cxraug.gans.diffusion.train import train_diffusion

STAGE = "train_diffusion"


@dataclass(frozen=True)
class Paths:
    prepared: Path = layout.PREPARED
    out: Path = layout.model_dir("diffusion")
    metrics: Path = layout.replicate_metrics(STAGE, 0)
    checkpoints: Path = layout.checkpoints(STAGE, 0)
    seed: int | None = None  # the generator replicate (replicates.generator_seeds); None: the section's seed


def run(params: Params, paths: Paths = Paths(), hooks: Hooks = NO_HOOKS) -> StageResult:
    result = train_diffusion(
        replicate_section(params.train_diffusion, paths.seed),
        paths.prepared,
        paths.out,
        paths.metrics,
        paths.checkpoints,
        hooks,
    )
    m = result.summary
    if not m:  # torchrun ranks > 0 report nothing
        return StageResult(STAGE, "", (), result.run_id, {}, result)
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    summary = (
        f"diffusion: {result.steps} steps in {result.seconds:.1f}s ({result.steps_per_second:.2f} steps/s, "
        f"{m['precision']}{resumed}); val noise MSE {m['val_loss']:.4f}; {m['sampler']} sampler, "
        f"{m['sampler_steps']} steps, guidance {m['guidance_scale']}: "
        f"{m['sampler_images_per_second']:.1f} img/s"
    )
    return StageResult(STAGE, summary, (paths.out, paths.metrics), result.run_id, m, result)
