"""`train_bagan` stage: BAGAN's autoencoder, class Gaussians and K+1-way GAN (gans/bagan/)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult, replicate_section
from cxraug.gans.bagan.train import train_bagan

STAGE = "train_bagan"


@dataclass(frozen=True)
class Paths:
    prepared: Path = layout.PREPARED
    out: Path = layout.model_dir("bagan")
    metrics: Path = layout.replicate_metrics(STAGE, 0)
    checkpoints: Path = layout.checkpoints(STAGE, 0)
    seed: int | None = None  # the generator replicate (replicates.generator_seeds); None: the section's seed


def run(params: Params, paths: Paths = Paths(), hooks: Hooks = NO_HOOKS) -> StageResult:
    result = train_bagan(
        replicate_section(params.train_bagan, paths.seed),
        paths.prepared,
        paths.out,
        paths.metrics,
        paths.checkpoints,
        hooks,
    )
    m = result.metrics
    if not m:  # torchrun ranks > 0 report nothing
        return StageResult(STAGE, "", (), result.run_id, m, result)
    rates = ", ".join(
        f"{k.removesuffix('_steps_per_second')} {m[k]:.1f} steps/s"
        for k in ("ae_steps_per_second", "gan_steps_per_second")
        if k in m
    )
    summary = (
        f"trained BAGAN ({m['ae_steps']} autoencoder + {m['gan_steps']} GAN steps, {m['precision']}"
        f"{', ' + rates if rates else ''}) in {m['seconds']:.0f}s; D on val: "
        f"{m['val_d_acc_real']:.1%} correct class, {m['val_real_taken_as_fake']:.1%} taken as generated, "
        f"balanced accuracy {m['d_val_balanced_accuracy']:.1%}, per-class AUC "
        + ", ".join(f"{c} {a:.2f}" for c, a in m["d_val_auc"].items())
    )
    return StageResult(STAGE, summary, (paths.out, paths.metrics), result.run_id, m, result)
