"""The one table of generators. Adding one means a package under `gans/` and one entry here: the
synthesize, classify, gan_metrics and report stages, tuning and the CLI all read the names from here.

Every generator provides the same three things: a training function with one signature (`Train`), a
loader that turns its stage's output directory into a `Proposer`, and the settings Optuna searches.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from cxraug.core.errors import CxraugError
from cxraug.core.stage import NO_HOOKS, Hooks


@runtime_checkable
class Proposer(Protocol):
    """What a trained generator offers synthesis."""

    classes: tuple[str, ...]  # class names, index = label

    def propose(
        self, class_index: int, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n fresh candidates of the class: uint8 images [n, H, W] (CPU) and, per image, a score in [0, 1]:
        the model's confidence that the image shows `class_index` (what the filter thresholds)."""
        ...


class Train(Protocol):
    def __call__(
        self,
        params: Any,  # the generator's params.yaml section
        prepared: Path,
        out_dir: Path,
        metrics_path: Path,
        checkpoint_dir: Path,
        hooks: Hooks = NO_HOOKS,
        embedder: Path | None = None,
    ) -> Any: ...


@dataclass(frozen=True)
class Generator:
    name: str  # as in stage names: train_<name>, synthesize@<name>, classify_gan@<name>-<n>
    label: str  # in report tables
    train: Train
    load_proposer: Callable[..., Proposer]  # (model_dir, device, precision mode) -> Proposer
    searched: tuple[str, ...]  # the section's learning rates an Optuna study searches
    needs_embedder: bool = False  # trains on the frozen embedder of train_embedder
    load_exemplar_proposer: Callable[..., Proposer] | None = None  # draws classes it never saw

    @property
    def train_stage(self) -> str:
        return f"train_{self.name}"

    @property
    def section(self) -> str:
        """Its params.yaml section."""
        return self.train_stage


def _lazy(path: str) -> Callable[..., Any]:
    """The function at "module:name", imported when first called: a stage imports only the generator it
    runs (diffusers, for the diffusion model, was imported by every stage that read this table)."""
    module, _, name = path.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    return call


def _train_bagan(params, prepared, out_dir, metrics_path, checkpoint_dir, hooks=NO_HOOKS, embedder=None):
    train = _lazy("cxraug.gans.bagan.train:train_bagan")
    return train(params, prepared, out_dir, metrics_path, checkpoint_dir, hooks)


def _train_diffusion(params, prepared, out_dir, metrics_path, checkpoint_dir, hooks=NO_HOOKS, embedder=None):
    train = _lazy("cxraug.gans.diffusion.train:train_diffusion")
    return train(params, prepared, out_dir, metrics_path, checkpoint_dir, hooks)


def _train_opengan(params, prepared, out_dir, metrics_path, checkpoint_dir, hooks=NO_HOOKS, embedder=None):
    if embedder is None:
        raise CxraugError("opengan trains on a frozen embedder: run train_embedder first")
    train = _lazy("cxraug.gans.opengan.train:train_opengan")
    return train(params, prepared, embedder, out_dir, metrics_path, checkpoint_dir, hooks)


GENERATORS: dict[str, Generator] = {
    "bagan": Generator(
        name="bagan",
        label="BAGAN",
        train=_train_bagan,
        load_proposer=_lazy("cxraug.gans.bagan.proposer:load_proposer"),
        searched=("lr_g", "lr_d", "lr_ae"),
    ),
    "opengan": Generator(
        name="opengan",
        label="NewGAN",
        train=_train_opengan,
        load_proposer=_lazy("cxraug.gans.opengan.proposer:load_proposer"),
        searched=("lr_g", "lr_d"),
        needs_embedder=True,
        load_exemplar_proposer=_lazy("cxraug.gans.opengan.proposer:load_exemplar_proposer"),
    ),
    "diffusion": Generator(
        name="diffusion",
        label="Diffusion",
        train=_train_diffusion,
        load_proposer=_lazy("cxraug.gans.diffusion.proposer:load_proposer"),
        searched=("lr",),
    ),
}


def names() -> tuple[str, ...]:
    return tuple(GENERATORS)


def get(name: str) -> Generator:
    """The generator called `name`, or a one-line error listing the choices."""
    if name not in GENERATORS:
        raise CxraugError(f"unknown GAN '{name}'; choose one of {', '.join(GENERATORS)}")
    return GENERATORS[name]


def load_proposer(name: str, model_dir: Path, device: torch.device, precision: str = "auto") -> Proposer:
    """`name`'s trained model as a Proposer at `precision` (synthesize.precision: auto, fp32 or bf16)."""
    generator = get(name)
    if not Path(model_dir).is_dir():
        raise CxraugError(
            f"{model_dir}: no trained {name} model; run `dvc repro {generator.train_stage}` first"
        )
    return generator.load_proposer(Path(model_dir), device, precision)
