"""Runs one training stage from a JSON job file; started by tests under `torchrun` (several processes)
or plainly (one process). `kill_at`: every rank raises after that step, as if the job had been killed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cxraug.core import distributed
from cxraug.core.config import (
    TrainBaganParams,
    TrainDiffusionParams,
    TrainEmbedderParams,
    TrainOpenganParams,
)
from cxraug.core.stage import Hooks


class Killed(RuntimeError):
    pass


def main(job_file: str) -> None:
    job = json.loads(Path(job_file).read_text())
    stage, paths, kill_at = job["stage"], {k: Path(v) for k, v in job["paths"].items()}, job.get("kill_at")

    default_phase = {"train_embedder": "embedder", "train_diffusion": "diffusion"}.get(stage, "gan")
    kill_phase = job.get("kill_phase", default_phase)

    def on_step(phase: str, step: int, nets) -> None:
        if kill_at is not None and step == kill_at and phase == kill_phase:
            raise Killed(f"killed after step {step}")

    try:
        if stage == "train_embedder":
            from cxraug.gans.opengan.train_embedder import train_embedder

            train_embedder(
                TrainEmbedderParams(**job["params"]),
                paths["prepared"],
                paths["out"],
                paths["metrics"],
                paths["checkpoints"],
                Hooks(on_step=on_step),
            )
        elif stage == "train_opengan":
            from cxraug.gans.opengan.train import train_opengan

            train_opengan(
                TrainOpenganParams(**job["params"]),
                paths["prepared"],
                paths["embedder"],
                paths["out"],
                paths["metrics"],
                paths["checkpoints"],
                Hooks(on_step=on_step),
            )
        elif stage == "train_bagan":
            from cxraug.gans.bagan.train import train_bagan

            train_bagan(
                TrainBaganParams(**job["params"]),
                paths["prepared"],
                paths["out"],
                paths["metrics"],
                paths["checkpoints"],
                Hooks(on_step=on_step),
            )
        elif stage == "train_diffusion":
            from cxraug.gans.diffusion.train import train_diffusion

            train_diffusion(
                TrainDiffusionParams(**job["params"]),
                paths["prepared"],
                paths["out"],
                paths["metrics"],
                paths["checkpoints"],
                Hooks(on_step=on_step),
            )
        else:
            raise SystemExit(f"unknown stage {stage}")
    except Killed as e:
        print(e, file=sys.stderr)
        sys.exit(3)
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
