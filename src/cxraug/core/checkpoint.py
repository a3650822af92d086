"""Training checkpoints: written atomically every N steps, resumed when a stage is restarted.

A checkpoint carries a fingerprint of the settings and data that produced it; one made under other
settings is set aside (renamed, never deleted) instead of being resumed into a different experiment.
Under torchrun, rank 0 alone writes, sets aside and removes; every rank restores the same file (on
several machines the checkpoint directory must be shared, or copied to each before resuming).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cxraug.core import distributed
from cxraug.core.runtime import atomic_save, safe_load

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resumed:
    step: int
    epoch: int
    run_id: str | None
    extra: dict


class Checkpointer:
    def __init__(self, path: str | Path, fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint

    def save(
        self,
        *,
        step: int,
        epoch: int,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator,
        run_id: str | None,
        extra: dict | None = None,
    ) -> None:
        if not distributed.current().is_main:
            return
        state = {
            "fingerprint": self.fingerprint,
            "step": step,
            "epoch": epoch,
            "run_id": run_id,
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # dropout and other kernels on a GPU draw from CUDA's own generator
            "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
            "extra": extra or {},
        }
        atomic_save(state, self.path)

    def restore(
        self,
        modules: dict[str, torch.nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        generator: torch.Generator,
    ) -> Resumed | None:
        """Load the saved state into the given objects; None when there is nothing to resume."""
        ctx = distributed.current()
        with ctx.main_first():  # rank 0 sets a stale file aside before the others look
            return self._restore(modules, optimizers, generator, ctx.is_main)

    def _restore(self, modules, optimizers, generator, is_main: bool) -> Resumed | None:
        if not self.path.is_file():
            return None
        state = safe_load(self.path)
        if state.get("fingerprint") != self.fingerprint:
            if not is_main:
                return None
            stale = self.path.with_name(f"{self.path.name}.stale-{int(time.time())}")
            self.path.rename(stale)
            log.warning("checkpoint %s was made with other settings or data; kept as %s", self.path, stale)
            return None
        for name, module in modules.items():
            module.load_state_dict(state["modules"][name])
        for name, optimizer in optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda_rng"])
        return Resumed(state["step"], state["epoch"], state["run_id"], state["extra"])

    def remove(self) -> None:
        """Called once the stage's final outputs are written: the checkpoint has served its purpose."""
        if distributed.current().is_main:
            self.path.unlink(missing_ok=True)
