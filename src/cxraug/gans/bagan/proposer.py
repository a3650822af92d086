"""The trained BAGAN as a `Proposer` for synthesis: batched draws from the class Gaussians, scored by D."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cxraug.core.errors import CxraugError
from cxraug.core.runtime import Precision, PrecisionMode, pick_precision, safe_load
from cxraug.core.training import evaluating, slices
from cxraug.data.datasets import to_model_range, to_uint8
from cxraug.gans.bagan.latent import ClassGaussians, LatentSampler
from cxraug.gans.bagan.nets import Architecture, Generator, discriminator


class BaganProposer:
    """Draws n images of a class: z ~ N(mu_c, Sigma_c), x = G(z) stored as uint8, score = D's softmax
    probability of class c over its K+1 outputs, computed on the uint8 image that is kept."""

    def __init__(
        self,
        generator: Generator,
        disc: torch.nn.Module,
        gaussians: ClassGaussians,
        precision: Precision,
        batch_size: int = 256,
    ) -> None:
        self.classes = gaussians.classes
        self.generator = generator.eval()
        self.discriminator = disc.eval()
        self.sampler = LatentSampler(gaussians, precision.device)
        self.precision = precision
        self.batch_size = batch_size

    def propose(
        self, class_index: int, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, scores, _ = self.propose_ranked(class_index, n, generator)
        return images, scores

    def propose_ranked(
        self, class_index: int, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """propose's images and scores, and per image whether D's largest of its K+1 outputs is the
        intended class (synthesis's argmax rule)."""
        if not 0 <= class_index < len(self.classes):
            raise CxraugError(
                f"class index {class_index} out of range: BAGAN knows {len(self.classes)} classes"
            )
        z = self.sampler(torch.full((n,), class_index), generator)
        images, scores, top = [], [], []
        with evaluating(self.generator, self.discriminator), self.precision.autocast():
            for sl in slices(n, self.batch_size):
                kept = to_uint8(self.generator(z[sl]))
                logits = self.discriminator(self.precision.batch(to_model_range(kept))).float()
                images.append(kept.cpu())
                scores.append(logits.softmax(1)[:, class_index].cpu())
                top.append((logits.argmax(1) == class_index).cpu())
        if not images:
            return torch.empty(0, 0, 0, dtype=torch.uint8), torch.empty(0), torch.empty(0, dtype=torch.bool)
        return torch.cat(images), torch.cat(scores), torch.cat(top)


def load_proposer(model_dir: Path, device: torch.device, precision: PrecisionMode = "auto") -> BaganProposer:
    """The trained BAGAN of `model_dir` (the stage's output directory) as a Proposer, running at
    `precision` (synthesize.precision): "auto" picks by benchmark on CPU, so fix it for reproducible draws."""
    model_dir = Path(model_dir)
    meta_path = model_dir / "bagan.json"
    if not meta_path.is_file():
        raise CxraugError(
            f"{model_dir}: no bagan.json; run `cxraug train-bagan` (dvc repro train_bagan) first"
        )
    meta = json.loads(meta_path.read_text())
    arch = Architecture(**meta["architecture"])
    chosen = pick_precision(device, precision)
    g, d = Generator(arch), discriminator(arch)
    g.load_state_dict(safe_load(model_dir / "generator.pt"))
    d.load_state_dict(safe_load(model_dir / "discriminator.pt"))
    gaussians = ClassGaussians.load(model_dir / "class_gaussians.npz")
    if list(gaussians.classes) != meta["classes"]:
        raise CxraugError(f"{model_dir}: class_gaussians.npz and bagan.json disagree; rerun train_bagan")
    return BaganProposer(chosen.module(g), chosen.module(d), gaussians, chosen)
