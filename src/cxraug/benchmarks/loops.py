"""The five training loops, each measured twice on the same data and nets: inside its stage function (MLflow
tracking, checkpoints, progress bar, metric buffers, held-out checks at epoch ends), timed by the stage's
`on_step` hook, and as the same step function in a bare loop, the two interleaved: the hook runs one bare
step after every stage step (benchmarks/ab.py), so ours and bare alternate under the same load. Plus the
FLOPs of one step.

A loop runs `epochs` short epochs of `steps` steps in the stage function, so the median step shows the
per-step machinery and the epoch boundaries show the per-epoch work (reported per epoch: on real data an
epoch is hundreds of steps long, here a few)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxraug.benchmarks.ab import InterleavedClock
from cxraug.benchmarks.common import LoopResult, count_flops
from cxraug.classifier.train import classifier_optimizer, train_classifier, train_step
from cxraug.core.checkpoint import Checkpointer
from cxraug.core.config import Params
from cxraug.core.runtime import Precision, pick_device, pick_precision, seed_everything
from cxraug.core.stage import Hooks
from cxraug.core.training import adam
from cxraug.data.datasets import Split, load_split, to_model_range
from cxraug.gans.bagan.latent import ClassGaussians, LatentSampler, class_probabilities
from cxraug.gans.bagan.nets import BaganNets
from cxraug.gans.bagan.steps import autoencoder_step, fakes_per_step
from cxraug.gans.bagan.steps import gan_step as bagan_gan_step
from cxraug.gans.bagan.train import architecture, train_bagan
from cxraug.gans.opengan.architectures import build_nets
from cxraug.gans.opengan.embedder import Embedder, embedder_step, load_embedder
from cxraug.gans.opengan.train import gan_step as opengan_gan_step
from cxraug.gans.opengan.train import train_opengan
from cxraug.gans.opengan.train_embedder import train_embedder
from cxraug.nets.vgg import build_vgg16


@dataclass(frozen=True)
class Budget:
    """How long each loop runs: `steps` steps per epoch, `epochs` epochs in the stage function (each stage
    step paired with a bare one), `timed` interleaved pairs of the loops timed outside a stage."""

    steps: int = 4
    epochs: int = 2
    timed: int = 4

    @property
    def total(self) -> int:
        return self.steps * self.epochs


def _result(
    loop: str, batch: int, step: Callable[[], object], clock: InterleavedClock, epochs: int, note: str
) -> LoopResult:
    """The loop's row from its interleaved clock (after the stage ran) and the step's counted FLOPs."""
    return LoopResult(
        loop,
        batch,
        clock.bare_median(),
        clock.median(),
        count_flops(step),
        clock.extra_per_epoch(epochs),
        note,
        clock.comparison(),
    )


def _batches(split: Split, batch: int, device: torch.device):
    """Endless random index batches into the split held on the device, as the stages draw them."""
    g = torch.Generator().manual_seed(0)
    while True:
        yield torch.randperm(len(split), generator=g)[:batch].to(device)


# ---------------------------------------------------------------------------------------------- BAGAN


def bagan(prepared: Path, params: Params, budget: Budget) -> list[LoopResult]:
    """The autoencoder step and the GAN step (D + G) of train_bagan."""

    train = load_split(prepared, "train")
    per_epoch = max(1, len(train) // params.train_bagan.batch_size)
    clean = per_epoch - 2 if per_epoch > 2 else per_epoch  # steps per epoch the comparison keeps
    epochs = max(budget.epochs, -(-budget.total // clean))  # about budget.total compared steps per phase
    p = params.train_bagan.model_copy(update={"ae_epochs": epochs, "epochs": epochs})
    device = pick_device(p.device)
    precision = pick_precision(device, p.precision)
    seed_everything(p.seed)
    nets = BaganNets.build(architecture(p, train)).apply(precision.module)
    betas = (p.beta1, p.beta2)
    opt_ae = adam([*nets.encoder.parameters(), *nets.decoder.parameters()], device, p.lr_ae, betas)
    opt_g, opt_d = (
        adam(nets.generator.parameters(), device, p.lr_g, betas),
        adam(nets.discriminator.parameters(), device, p.lr_d, betas),
    )
    on_device = train.to(device)
    batches = _batches(on_device, p.batch_size, device)
    k, dim = train.n_classes, p.latent_dim
    standard = ClassGaussians(
        train.classes, np.zeros((k, dim)), np.stack([np.eye(dim)] * k), np.ones(k), np.zeros(k)
    )
    sampler, probs, rng = (
        LatentSampler(standard, device),
        class_probabilities(train.class_counts(), "uniform"),
        torch.Generator(),
    )

    def draw(n: int):
        c = torch.multinomial(probs, n, replacement=True, generator=rng)
        return sampler(c, rng), c.to(device)

    def real():
        idx = next(batches)
        return precision.batch(to_model_range(on_device.images[idx])), on_device.labels[idx]

    def ae_step():
        autoencoder_step(nets.encoder, nets.decoder, opt_ae, real()[0], precision)

    n_fake = fakes_per_step(p.batch_size, k)

    def gan():
        x, y = real()
        bagan_gan_step(nets.generator, nets.discriminator, opt_g, opt_d, x, y, draw, n_fake, precision)

    clocks = {
        "autoencoder": InterleavedClock(ae_step, "autoencoder", per_epoch),
        "gan": InterleavedClock(gan, "gan", per_epoch),
    }
    with tempfile.TemporaryDirectory(prefix="cxraug-bench-bagan-") as tmp:
        out = Path(tmp)
        train_bagan(
            p,
            prepared,
            out / "models",
            out / "metrics.json",
            out / "ckpt",
            Hooks(on_step=lambda *a: [clock(*a) for clock in clocks.values()]),
        )
    note = f"{per_epoch} steps/epoch, widths G {p.g_base} D {p.d_base}, {precision.describe()}"
    # BAGAN's last epoch end falls inside the window
    return [
        _result("BAGAN autoencoder", p.batch_size, ae_step, clocks["autoencoder"], epochs, note),
        _result("BAGAN GAN step (D + G)", p.batch_size, gan, clocks["gan"], epochs, note),
    ]


# ------------------------------------------------------------------------------------ embedder, OpenGAN


def embedder(prepared: Path, params: Params, budget: Budget, work: Path) -> tuple[LoopResult, Path]:
    """train_embedder's step (two augmented views, supervised contrastive loss). Returns the trained
    embedder's path too (the OpenGAN loop needs one), under `work`."""

    p = params.train_embedder.model_copy(update={"epochs": budget.epochs, "steps_per_epoch": budget.steps})
    train = load_split(prepared, "train")
    device = pick_device(p.device)
    precision = pick_precision(device, p.precision)
    seed_everything(p.seed)
    model = precision.module(Embedder(train.image_size, p.embed_dim, p.d_base))
    opt = adam(model.parameters(), device, p.lr, weight_decay=p.weight_decay, decoupled=True)
    on_device, g = train.to(device), torch.Generator().manual_seed(0)
    batches = _batches(on_device, p.batch_size, device)

    def step():
        idx = next(batches)
        embedder_step(
            model, opt, on_device.images[idx], on_device.labels[idx], p.temperature, p.augment, g, precision
        )

    clock = InterleavedClock(step, per_epoch=budget.steps)
    keep = work / "embedder"
    train_embedder(
        p, prepared, keep / "embedder.pt", keep / "metrics.json", keep / "ckpt", Hooks(on_step=clock)
    )
    note = f"base width {p.d_base}, 2 views per image, {precision.describe()}"
    return _result("embedder step", p.batch_size, step, clock, budget.epochs - 1, note), keep / "embedder.pt"


def opengan(prepared: Path, embedder_path: Path, params: Params, budget: Budget) -> LoopResult:
    """train_opengan's step: D on real and generated (x, e), then G with the consistency term."""

    p = params.train_opengan.model_copy(update={"epochs": budget.epochs, "steps_per_epoch": budget.steps})
    train = load_split(prepared, "train")
    device = pick_device(p.device)
    precision = pick_precision(device, p.precision)
    frozen = precision.module(load_embedder(embedder_path, device))
    seed_everything(p.seed)
    size, dim = train.image_size, frozen.embed_dim
    g, d = map(precision.module, build_nets(p, size, dim))  # the configured generator
    opt_g, opt_d = (
        adam(g.parameters(), device, p.lr_g, (p.beta1, p.beta2)),
        adam(d.parameters(), device, p.lr_d, (p.beta1, p.beta2)),
    )
    on_device = train.to(device)
    with torch.no_grad():
        e_all = frozen(to_model_range(on_device.images))
    batches, rng = _batches(on_device, p.batch_size, device), torch.Generator().manual_seed(0)

    def step():
        idx = next(batches)
        z = torch.randn(len(idx), p.latent_dim, generator=rng).to(device)
        real = precision.batch(to_model_range(on_device.images[idx]))
        opengan_gan_step(g, d, frozen, opt_g, opt_d, real, e_all[idx], z, p, precision)

    clock = InterleavedClock(step, per_epoch=budget.steps)
    with tempfile.TemporaryDirectory(prefix="cxraug-bench-opengan-") as tmp:
        out = Path(tmp)
        train_opengan(
            p,
            prepared,
            embedder_path,
            out / "model",
            out / "metrics.json",
            out / "ckpt",
            Hooks(on_step=clock),
        )
    widths = f"{p.generator} G {p.g_base}, D {p.d_base}"
    note = f"{widths}, consistency {p.consistency} x {p.consistency_weight:g}, {precision.describe()}"
    return _result("OpenGAN step (D + G)", p.batch_size, step, clock, budget.epochs - 1, note)


# ------------------------------------------------------------------------------------------- classifier


def classifier(prepared: Path, params: Params, budget: Budget) -> LoopResult:
    """train_classifier's step (VGG16, cross-entropy, fused AdamW) under a steps budget of budget.total
    steps, the val split scored every budget.steps steps (the "epoch" ends)."""

    p = params.classify.model_copy(
        update={
            "budget": "steps",
            "steps": budget.total,
            "eval_every": budget.steps,
            "patience": budget.total,
        }
    )
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    device = pick_device(p.device)
    precision = pick_precision(device, p.precision)
    seed_everything(0)
    model = precision.module(
        build_vgg16(
            train.n_classes,
            image_size=train.image_size,
            width=p.width,
            head=p.head,
            norm=p.norm,
            dropout=p.dropout,
        )
    )
    opt = classifier_optimizer(model, p, device)
    on_device = train.to(device)
    batches = _batches(on_device, p.batch_size, device)

    def step():
        train_step(model, opt, on_device.images, on_device.labels, next(batches), precision)

    clock = InterleavedClock(step, per_epoch=budget.steps)  # an "epoch" ends at each val scoring
    with tempfile.TemporaryDirectory(prefix="cxraug-bench-classify-") as tmp:
        checkpoint = Checkpointer(Path(tmp) / "ckpt.pt", "bench")  # the stage checkpoints every round
        train_classifier(train.images, train.labels, val, p, seed=0, checkpoint=checkpoint, on_step=clock)
    note = (
        f"VGG16 width {p.width:g}, {p.head} head, {len(val)} val images per epoch end, {precision.describe()}"
    )
    return _result("classifier step", p.batch_size, step, clock, budget.epochs - 1, note)


def precision_of(params: Params) -> Precision:
    """The precision the classifier stage runs with on this machine (the suite's peak is measured at it)."""
    return pick_precision(pick_device(params.classify.device), params.classify.precision)
