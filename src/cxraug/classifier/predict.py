"""A trained classifier on disk and at work: save, load, predict class probabilities in batches."""

from __future__ import annotations

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
    model: VGG16, path: str | Path, classes: tuple[str, ...], **meta: str | int | float
) -> Path:
    """Weights + the constructor settings needed to rebuild the net (loadable with weights_only=True)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_save(
        {"config": dict(model.config), "classes": list(classes), "meta": meta, "state_dict": state}, path
    )


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> VGG16:
    """A trained VGG16 in eval mode (its `classes` attribute names the outputs)."""
    saved = safe_load(path)
    model = VGG16(**saved["config"])
    model.load_state_dict(saved["state_dict"])
    model.classes = tuple(saved["classes"])
    return model.to(device).eval()
