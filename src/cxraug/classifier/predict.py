"""A trained classifier on disk and at work: save, load, predict class probabilities in batches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cxraug.core.distributed import SINGLE, Context
from cxraug.core.runtime import Precision, atomic_save, safe_load
from cxraug.data.datasets import to_model_range
from cxraug.nets.vgg import VGG16


@torch.no_grad()
def predict_proba(
    model: nn.Module,
    images: torch.Tensor,
    precision: Precision,
    batch_size: int = 512,
    ctx: Context = SINGLE,
) -> np.ndarray:
    """Softmax scores float32 [N, K] of uint8 images [N, H, W], in eval mode and batches. Under torchrun
    each rank scores its share of the images and every rank gets all N rows."""
    was_training = model.training
    model.eval()
    mine = images[ctx.shard.rows(len(images))]
    out = []
    for start in range(0, len(mine), batch_size):
        x = precision.batch(to_model_range(mine[start : start + batch_size].to(precision.device)))
        with precision.autocast():
            logits = model(x)
        out.append(logits.float().softmax(1))
    model.train(was_training)
    if not out and not ctx.distributed:
        return np.zeros((0, 0), np.float32)
    local = torch.cat(out) if out else torch.zeros(0, model.config["n_classes"], device=precision.device)
    return ctx.gather_rows(local, len(images)).cpu().numpy()


def save_classifier(
    model: VGG16,
    path: str | Path,
    classes: tuple[str, ...],
    more_seeds: Sequence[tuple[int, Mapping[str, torch.Tensor]]] = (),
    runs: Sequence[tuple[str, int | None]] = (),
    **meta: str | int | float,
) -> Path:
    """Weights + the constructor settings needed to rebuild the net (loadable with weights_only=True).
    `model` is the first run's net (what `load_classifier` returns); `more_seeds` holds (classifier seed,
    state dict) of the variant's other runs, which `load_seed_classifiers` returns as well; `runs`, when
    given, names every run, first included: (key s<c> or g<g>s<c>, generator seed or None)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    extra = [
        {"seed": int(seed), "state_dict": {k: v.detach().cpu().contiguous() for k, v in sd.items()}}
        for seed, sd in more_seeds
    ]
    payload = {"config": dict(model.config), "classes": list(classes), "meta": meta, "state_dict": state}
    named = [{"key": str(k), "generator_seed": -1 if g is None else int(g)} for k, g in runs]
    return atomic_save({**payload, "more_seeds": extra, "runs": named}, path)


def _build(saved: dict, state_dict: Mapping[str, torch.Tensor], device: torch.device | str) -> VGG16:
    model = VGG16(**saved["config"])
    model.load_state_dict(state_dict)
    model.classes = tuple(saved["classes"])
    return model.to(device).eval()


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> VGG16:
    """The first seed's trained VGG16 in eval mode (its `classes` attribute names the outputs)."""
    saved = safe_load(path)
    return _build(saved, saved["state_dict"], device)


def saved_runs(path: str | Path) -> list[tuple[str, int | None]]:
    """(key, generator seed or None) of every run in the file, first run first; [] for a file written
    before classify named its runs."""
    return [
        (m["key"], None if m["generator_seed"] < 0 else m["generator_seed"])
        for m in safe_load(path).get("runs", [])
    ]


def load_seed_classifiers(path: str | Path, device: torch.device | str = "cpu") -> list[tuple[int, VGG16]]:
    """(seed, VGG16 in eval mode) of every seed in the file, first seed first. A file written before
    classify kept every seed holds the first one only."""
    saved = safe_load(path)
    first = (int(saved.get("meta", {}).get("seed", 0)), _build(saved, saved["state_dict"], device))
    return [first] + [
        (int(m["seed"]), _build(saved, m["state_dict"], device)) for m in saved.get("more_seeds", [])
    ]
