"""Which networks `train_opengan` builds, and how a saved model names them so it can be rebuilt.

`train_opengan.generator`: residual (resnet.ResidualGenerator, the published NewGAN: the default) or dcgan
(nets.Generator, the transposed-conv stack this project used first). Either trains against
resnet.ConvDiscriminator (stride-2 SN convs, projection term per `train_opengan.projection`), so the
generator is the only difference between the two settings.

A saved net is {"arch": name, "config": constructor kwargs, "state_dict": ...}; files written before
"arch" existed hold the dcgan generator and nets.ProjectionDiscriminator.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from torch import nn

from cxraug.core.config import TrainOpenganParams
from cxraug.core.errors import CxraugError
from cxraug.gans.opengan.nets import Generator, ProjectionDiscriminator
from cxraug.gans.opengan.resnet import ConvDiscriminator, ResidualGenerator

GENERATORS: dict[str, type[nn.Module]] = {"residual": ResidualGenerator, "dcgan": Generator}
DISCRIMINATORS: dict[str, type[nn.Module]] = {
    "conv": ConvDiscriminator,
    "projection": ProjectionDiscriminator,
}
LEGACY = {"generator": "dcgan", "discriminator": "projection"}  # files without "arch"


def build_nets(params: TrainOpenganParams, image_size: int, embed_dim: int) -> tuple[nn.Module, nn.Module]:
    """G and D for these settings, freshly initialised (from the global torch seed)."""
    generator = GENERATORS[params.generator](image_size, params.latent_dim, embed_dim, params.g_base)
    discriminator = ConvDiscriminator(
        image_size, embed_dim, params.d_base, params.spectral_norm, params.projection
    )
    return generator, discriminator


def arch_of(module: nn.Module) -> str:
    for table in (GENERATORS, DISCRIMINATORS):
        for name, cls in table.items():
            if type(module) is cls:
                return name
    raise TypeError(f"{type(module).__name__} is not an OpenGAN network")


def saved_state(module: nn.Module) -> dict:
    """What the model file keeps of a net: its architecture's name, constructor kwargs and weights."""
    return {
        "arch": arch_of(module),
        "config": dict(module.config),
        "state_dict": {k: v.cpu() for k, v in module.state_dict().items()},
    }


def rebuild(saved: dict, role: str, source: Path | str = "the model file") -> nn.Module:
    """The net of a saved_state (role: "generator" | "discriminator"), weights loaded. `source` names the
    file in errors: a file whose constructor kwargs this code no longer takes (e.g. `base_width`, since
    renamed g_base / d_base) is a one-line CxraugError, not the constructor's TypeError."""
    table = GENERATORS if role == "generator" else DISCRIMINATORS
    arch = saved.get("arch", LEGACY[role])
    if arch not in table:
        raise CxraugError(
            f"{source}: unknown OpenGAN {role} '{arch}'; retrain it with `cxraug train-opengan`"
        )
    accepted = inspect.signature(table[arch]).parameters
    stale = sorted(set(saved["config"]) - set(accepted))
    if stale:
        raise CxraugError(
            f"{source}: its {role} was saved by an older cxraug (settings {', '.join(stale)} no longer "
            "exist); retrain with `cxraug train-opengan`"
        )
    module = table[arch](**saved["config"])
    module.load_state_dict(saved["state_dict"])
    return module


RECIPE_FILE = "recipe.json"


def recipe(params: TrainOpenganParams) -> dict:
    """The choices that make this NewGAN what it is (issue 14's ablation axes)."""
    keys = ("generator", "consistency", "consistency_weight", "loss", "projection", "lr_g", "lr_d", "beta1")
    keys += ("d_steps", "ema_decay", "augment", "mode_seeking_weight")
    return {"gan": "opengan", **params.model_dump(include=set(keys))}
