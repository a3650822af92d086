"""BAGAN's two training phases as plain loops: the autoencoder, then the GAN.

Batch order comes from a generator seeded by (seed, phase, epoch), and the latents and classes of
generated images from the run's explicit generator (saved in every checkpoint), so a run resumed mid-epoch
replays exactly what an uninterrupted run does. Checkpoint writing is the caller's `save(step, epoch)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cxraug.core.config import TrainBaganParams
from cxraug.core.distributed import SINGLE, Context
from cxraug.core.runtime import Precision, progress
from cxraug.core.stage import NO_HOOKS, EpochEnd, Hooks
from cxraug.core.training import evaluating, phase_epoch_batches, slices
from cxraug.data.datasets import Split, to_model_range, to_uint8
from cxraug.gans.bagan.latent import ClassGaussians, LatentSampler, class_probabilities
from cxraug.gans.bagan.losses import balanced_class_weights, reconstruction_loss
from cxraug.gans.bagan.nets import BaganNets
from cxraug.gans.bagan.proposer import BaganProposer
from cxraug.gans.bagan.steps import autoencoder_step, fakes_per_step, gan_step
from cxraug.gans.bagan.tracking import BaganTracker

PHASES = ("autoencoder", "gan")
SaveFn = Callable[[int, int], None]  # (step, epoch) -> None


@dataclass
class Session:
    """What both phases share: settings, nets, optimizers, data on the device, randomness, tracking."""

    params: TrainBaganParams
    nets: BaganNets
    optimizers: dict[str, torch.optim.Optimizer]  # "autoencoder", "generator", "discriminator"
    train: Split
    val: Split
    precision: Precision
    rng: torch.Generator
    tracker: BaganTracker
    hooks: Hooks = NO_HOOKS
    ctx: Context = SINGLE
    wrapped: BaganNets | None = None  # the DDP-wrapped nets for training passes under torchrun

    @property
    def training_nets(self) -> BaganNets:
        return self.wrapped or self.nets

    @property
    def steps_per_epoch(self) -> int:
        n, b = len(self.train), self.params.batch_size
        return n // b if n >= b else 1

    def epoch_batches(self, phase: str, epoch: int) -> list[torch.Tensor]:
        p = self.params
        return phase_epoch_batches(
            len(self.train), p.batch_size, p.seed, PHASES.index(phase), epoch, self.train.images.device
        )

    def images(self, uint8: torch.Tensor) -> torch.Tensor:
        return self.precision.batch(to_model_range(uint8))

    def my_rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's images (model range) and labels of the global batch `idx`."""
        mine = self.ctx.shard.take(idx)
        return self.images(self.train.images[mine]), self.train.labels[mine]


def per_class_examples(split: Split, n: int) -> torch.Tensor:
    """The first n images of every class, class after class (fixed inputs of the reconstruction grids);
    a class with fewer images repeats them."""
    picks = []
    for c in range(split.n_classes):
        idx = torch.nonzero(split.labels == c).flatten()
        picks.append(idx[torch.arange(n, device=idx.device) % len(idx)])
    return split.images[torch.cat(picks)]


def _run_phase(
    s: Session,
    phase: str,
    epochs: int,
    start_step: int,
    step_fn,
    end_of_epoch,
    nets: dict[str, torch.nn.Module],
    save: SaveFn,
    proposer: Callable[[], BaganProposer] | None = None,
):
    """The loop both phases share: epochs of batches from start_step on, step metrics, epoch-end work,
    a checkpoint every checkpoint_every steps, the progress bar."""
    per_epoch = s.steps_per_epoch
    bar = progress(total=epochs * per_epoch, initial=start_step, desc=phase, unit="step")
    step = start_step
    for epoch in range(step // per_epoch, epochs):
        for idx in s.epoch_batches(phase, epoch)[step - epoch * per_epoch :]:
            shown = s.tracker.step(step_fn(idx), step + 1)
            step += 1
            if step % per_epoch == 0:
                if s.ctx.is_main:  # held-out checks and grids: logging only
                    end_of_epoch(epoch + 1, step)
                if s.hooks.on_epoch is not None:  # the nets in eval mode, as when sampling
                    with evaluating(*nets.values()):
                        s.hooks.on_epoch(EpochEnd(phase, epoch + 1, nets, proposer() if proposer else None))
            if step % s.params.checkpoint_every == 0:
                s.tracker.flush()
                save(step, step // per_epoch)
            bar.update()
            if shown:
                bar.set_postfix({k.split("/")[-1]: f"{v:.3f}" for k, v in shown.items()}, refresh=False)
            if s.hooks.on_step is not None:
                s.hooks.on_step(phase, step, s.nets.modules())
    bar.close()
    s.tracker.flush()


def train_autoencoder(s: Session, start_step: int, save: SaveFn) -> None:
    """Encoder + decoder on the real training images, mean squared reconstruction error."""
    encoder, decoder = s.training_nets.encoder, s.training_nets.decoder
    opt = s.optimizers["autoencoder"]
    examples = per_class_examples(s.train, s.params.grid_per_class)

    def step_fn(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        images, _ = s.my_rows(idx)
        loss = autoencoder_step(encoder, decoder, opt, images, s.precision, s.ctx.shard, len(idx))
        return {"ae/loss": loss}

    def end_of_epoch(epoch: int, step: int) -> None:
        s.tracker.scalars({"ae/val_loss": reconstruction_error(s, s.val.images), "ae/epoch": epoch}, step)
        s.tracker.reconstructions(examples, reconstruct(s, examples), epoch, s.params.ae_epochs)

    if start_step == 0 and s.ctx.is_main:  # step 0 of the image slider, where MLflow's card opens
        s.tracker.reconstructions(examples, reconstruct(s, examples), 0, s.params.ae_epochs)
    nets = {"encoder": s.nets.encoder, "decoder": s.nets.decoder}
    _run_phase(s, "autoencoder", s.params.ae_epochs, start_step, step_fn, end_of_epoch, nets, save)


def reconstruct(s: Session, images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> uint8 reconstructions."""
    enc, dec = s.nets.encoder, s.nets.decoder
    with evaluating(enc, dec), s.precision.autocast():
        return torch.cat([to_uint8(dec(enc(s.images(images[sl])))) for sl in slices(len(images))])


def reconstruction_error(s: Session, images: torch.Tensor) -> float:
    """Mean squared reconstruction error (in [-1, 1] units) of held-out images."""
    enc, dec = s.nets.encoder, s.nets.decoder
    total = 0.0
    with evaluating(enc, dec), s.precision.autocast():
        for sl in slices(len(images)):
            x = s.images(images[sl])
            total += reconstruction_loss(dec(enc(x)), x).item() * len(x)
    return total / len(images)


def encode(s: Session, images: torch.Tensor) -> np.ndarray:
    """Latent codes (float64) of uint8 images, in full fp32."""
    enc = s.nets.encoder
    with evaluating(enc):
        return torch.cat([enc(s.images(images[sl])).double().cpu() for sl in slices(len(images))]).numpy()


def train_gan(s: Session, gaussians: ClassGaussians, start_step: int, save: SaveFn) -> None:
    """D: real images vs their class, generated vs "fake"; G: its images must pass as the class their
    latent was drawn from, z ~ N(mu_c, Sigma_c), c ~ class_sampling."""
    g, d = s.training_nets.generator, s.training_nets.discriminator
    opt_g, opt_d = s.optimizers["generator"], s.optimizers["discriminator"]
    device = s.train.images.device
    sampler = LatentSampler(gaussians, device)
    probs = class_probabilities(s.train.class_counts().cpu(), s.params.class_sampling)
    n_fake = fakes_per_step(s.params.batch_size, s.train.n_classes)
    fixed = fixed_latents(sampler, s.train.n_classes, s.params.grid_per_class, s.params.seed)
    weights = None
    if s.params.d_class_weight == "balanced":
        weights = balanced_class_weights(s.train.class_counts().cpu())

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        classes = torch.multinomial(probs, n, replacement=True, generator=s.rng)
        return sampler(classes, s.rng), classes.to(device)

    def step_fn(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        real, labels = s.my_rows(idx)
        shard = s.ctx.shard
        metrics = gan_step(
            g, d, opt_g, opt_d, real, labels, draw, n_fake, s.precision, shard, len(idx), weights
        )
        return {f"gan/{k}": v for k, v in metrics.items()}

    def end_of_epoch(epoch: int, step: int) -> None:
        s.tracker.scalars({**discriminator_on(s, s.val), "gan/epoch": epoch}, step)
        s.tracker.samples(generate(s, fixed), epoch, s.params.epochs)

    def proposer() -> BaganProposer:  # built in eval mode: it puts the nets there itself
        return BaganProposer(s.nets.generator, s.nets.discriminator, gaussians, s.precision)

    if start_step == 0 and s.ctx.is_main:  # the decoder as generator: step 0 of the slider
        s.tracker.samples(generate(s, fixed), 0, s.params.epochs)
    nets = {"generator": s.nets.generator, "discriminator": s.nets.discriminator}
    _run_phase(s, "gan", s.params.epochs, start_step, step_fn, end_of_epoch, nets, save, proposer)


def fixed_latents(sampler: LatentSampler, n_classes: int, per_class: int, seed: int) -> torch.Tensor:
    """per_class latents of every class, class after class, from their own generator: the same every
    epoch and after a resume, and independent of the training draws."""
    classes = torch.arange(n_classes).repeat_interleave(per_class)
    return sampler(classes, torch.Generator().manual_seed(seed + 1))


def generate(s: Session, latents: torch.Tensor) -> torch.Tensor:
    """uint8 images from latents, G in eval mode (batch-norm running statistics, as when sampling)."""
    g = s.nets.generator
    with evaluating(g), s.precision.autocast():
        return torch.cat([to_uint8(g(latents[sl])) for sl in slices(len(latents))])


def discriminator_on(s: Session, split: Split) -> dict[str, float]:
    """D on held-out real images: share given their true class, share taken for generated."""
    d = s.nets.discriminator
    with evaluating(d), s.precision.autocast():
        predicted = torch.cat([d(s.images(split.images[sl])).argmax(1) for sl in slices(len(split))])
    return {
        "gan/val_d_acc_real": (predicted == split.labels).float().mean().item(),
        "gan/val_real_taken_as_fake": (predicted == split.n_classes).float().mean().item(),
    }
