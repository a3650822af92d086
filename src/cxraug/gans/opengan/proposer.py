"""The trained OpenGAN-style model as the rest of the pipeline uses it: its files, and the proposers that
draw candidate images of a class for `synthesize`.

models/opengan/ holds `opengan.pt` (G, D, per-class banks of training-image embeddings, settings) and
`embedder.pt` (a copy of the frozen embedder, so the directory is self-contained).

Score of a candidate x drawn for class c with conditioning e, in [0, 1] (recorded by `synthesize`, and
filtered by `synthesize.filter.per_gan.opengan`; by default mode none keeps every candidate):

    score = sigmoid(D(x, e)) * softmax_k( cos(f(x), p_k) / T )[c]

- sigmoid(D(x, e)): the discriminator's belief that x is a real image agreeing with e;
- f: the frozen embedder; p_k: prototype of class k, the normalised mean embedding of its real training
  images (for an unseen class: of its exemplars, competing with the prototypes of every other class);
- T: `train_opengan.score_temperature`. The second factor is the embedder's nearest-prototype agreement:
  near 1 when f(x) is much closer to c's prototype than to any other class's.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from cxraug.core.errors import CxraugError
from cxraug.core.runtime import PrecisionMode, atomic_save, safe_load
from cxraug.data.datasets import to_uint8
from cxraug.gans.opengan.architectures import rebuild, saved_state
from cxraug.gans.opengan.conditioning import Conditioning, make_conditioning, prototype
from cxraug.gans.opengan.embedder import Embedder, embed, load_embedder

__all__ = ["OpenganProposer", "load_embedder", "load_exemplar_proposer", "load_proposer", "save_model"]

FORMAT = "cxraug.opengan/1"
MODEL_FILE, EMBEDDER_FILE = "opengan.pt", "embedder.pt"


def save_model(
    out_dir: Path,
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    classes: tuple[str, ...],
    trained_classes: list[str],
    banks: list[torch.Tensor],
    conditioning: str,
    score_temperature: float,
) -> None:
    atomic_save(
        {
            "format": FORMAT,
            "generator": saved_state(generator),  # with "arch": which network to rebuild
            "discriminator": saved_state(discriminator),
            "classes": list(classes),
            "trained_classes": list(trained_classes),
            "banks": [b.float().cpu() for b in banks],
            "conditioning": conditioning,
            "score_temperature": score_temperature,
        },
        Path(out_dir) / MODEL_FILE,
    )


class OpenganProposer:
    """Fresh candidates of a class with their scores (see the module docstring for the formula)."""

    def __init__(
        self,
        *,
        classes: tuple[str, ...],
        generator: torch.nn.Module,
        discriminator: torch.nn.Module,
        embedder: Embedder,
        conditionings: list[Conditioning],
        prototypes: torch.Tensor,
        targets: list[int],
        temperature: float,
        batch_size: int = 256,
    ) -> None:
        self.classes = classes
        self.generator, self.discriminator, self.embedder = generator, discriminator, embedder
        self.conditionings, self.targets = conditionings, targets
        self.device = next(generator.parameters()).device
        self.prototypes = prototypes.to(self.device)
        self.temperature, self.batch_size = temperature, batch_size

    # `with torch.no_grad()` rather than the decorator: mutmut (scripts/mutation.py) skips decorated
    # functions, and these two hold the score formula
    def judge(self, images: torch.Tensor, e: torch.Tensor, class_index: int) -> tuple[torch.Tensor, ...]:
        """Per image: realness sigmoid(D(x, e)), agreement (softmax over prototypes), nearest is c."""
        with torch.no_grad():
            realness = torch.sigmoid(self.discriminator(images, e).float())
            logits = self.embedder(images) @ self.prototypes.T / self.temperature
            target = self.targets[class_index]
            return realness, logits.softmax(1)[:, target], logits.argmax(1) == target

    def propose(
        self, class_index: int, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= class_index < len(self.classes):
            raise CxraugError(f"class index {class_index} out of range for classes {list(self.classes)}")
        self.generator.eval()
        self.discriminator.eval()
        images, scores = [], []
        with torch.no_grad():
            for start in range(0, n, self.batch_size):
                m = min(self.batch_size, n - start)
                e = self.conditionings[class_index].draw(m, generator).to(self.device)
                z = torch.randn(m, self.generator.latent_dim, generator=generator).to(self.device)
                x = self.generator(z, e)
                realness, agreement, _ = self.judge(x, e, class_index)
                images.append(to_uint8(x).cpu())
                scores.append((realness * agreement).cpu())
        if not images:
            return torch.empty(0, 0, 0, dtype=torch.uint8), torch.empty(0)
        return torch.cat(images), torch.cat(scores)


def _read(model_dir: Path, device: torch.device) -> tuple[dict, torch.nn.Module, torch.nn.Module, Embedder]:
    model_dir = Path(model_dir)
    state = safe_load(model_dir / MODEL_FILE)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CxraugError(
            f"{model_dir / MODEL_FILE}: not written by `cxraug train-opengan`; rerun that stage"
        )
    generator = rebuild(state["generator"], "generator", model_dir / MODEL_FILE)
    discriminator = rebuild(state["discriminator"], "discriminator", model_dir / MODEL_FILE)
    embedder = load_embedder(model_dir / EMBEDDER_FILE, device)
    return (
        state,
        generator.to(device).eval().requires_grad_(False),
        discriminator.to(device).eval().requires_grad_(False),
        embedder,
    )


def load_proposer(
    model_dir: Path, device: torch.device, precision: PrecisionMode = "auto"
) -> OpenganProposer:
    """A proposer for every class of the prepared data, conditioned per `train_opengan.conditioning` on
    embeddings of its real training images (classes left out of training included: they are drawn from
    their training images as exemplars). Its nets stay fp32: synthesis's autocast (synthesize.precision)
    sets the arithmetic, so `precision` changes nothing here."""
    state, generator, discriminator, embedder = _read(model_dir, device)
    banks = state["banks"]
    return OpenganProposer(
        classes=tuple(state["classes"]),
        generator=generator,
        discriminator=discriminator,
        embedder=embedder,
        conditionings=[make_conditioning(state["conditioning"], b) for b in banks],
        prototypes=torch.stack([prototype(b) for b in banks]),
        targets=list(range(len(banks))),
        temperature=state["score_temperature"],
    )


def _as_image_batch(exemplars: torch.Tensor, size: int) -> torch.Tensor:
    if not isinstance(exemplars, torch.Tensor) or exemplars.dtype != torch.uint8 or exemplars.ndim != 3:
        raise CxraugError("exemplars must be a uint8 tensor [M, H, W] of grayscale images")
    if len(exemplars) == 0:
        raise CxraugError("no exemplar images given: pass at least one image of the new class")
    if exemplars.shape[-2:] == (size, size):
        return exemplars
    x = F.interpolate(exemplars[:, None].float(), size=(size, size), mode="bilinear", antialias=True)
    return x[:, 0].round().clamp(0, 255).to(torch.uint8)


def load_exemplar_proposer(
    model_dir: Path, exemplars: torch.Tensor, label: str, device: torch.device
) -> OpenganProposer:
    """A proposer for one class known only by exemplar images (uint8 [M, H, W], resized if needed): G is
    conditioned on their embeddings; the score's agreement pits their prototype against the prototypes
    of every stored class of another name."""
    state, generator, discriminator, embedder = _read(model_dir, device)
    bank = embed(embedder, _as_image_batch(exemplars, generator.config["image_size"])).cpu()
    others = [prototype(b) for name, b in zip(state["classes"], state["banks"], strict=True) if name != label]
    return OpenganProposer(
        classes=(label,),
        generator=generator,
        discriminator=discriminator,
        embedder=embedder,
        conditionings=[make_conditioning(state["conditioning"], bank)],
        prototypes=torch.stack([*others, prototype(bank)]),
        targets=[len(others)],
        temperature=state["score_temperature"],
    )
