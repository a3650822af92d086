"""Throughput of train_bagan's autoencoder and GAN steps vs a plain loop over the PNG files.

Ours: the prepared split as one uint8 tensor on the device, batches indexed out of it, the precision
`pick_precision` chooses (channels_last on this CPU), fused Adam. Plain: the same nets, loss and batch size
fed by a DataLoader over the PNG files (PIL decode + resize + normalise per image, every epoch), NCHW fp32,
torch's default Adam. Both run the same step functions, so the difference is the input path and the
layout/optimiser choices.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxraug.config import Params
from cxraug.data.datasets import Split, batch_indices, load_split, to_model_range
from cxraug.errors import CxraugError
from cxraug.gans.bagan import architecture
from cxraug.gans.bagan_latent import ClassGaussians, LatentSampler, class_probabilities
from cxraug.gans.bagan_nets import BaganNets
from cxraug.gans.bagan_steps import adam, autoencoder_step, fakes_per_step, gan_step
from cxraug.runtime import Precision, pick_device, pick_precision, seed_everything


@dataclass(frozen=True)
class Rate:
    loop: str
    phase: str
    steps_per_second: float
    images_per_second: float  # real training images consumed per second


class PngDataset(torch.utils.data.Dataset):
    """What a plain PyTorch loop does: decode each PNG when it is asked for."""

    def __init__(self, paths: list[str], labels: list[int], image_size: int) -> None:
        from torchvision import transforms

        self.paths, self.labels = paths, labels
        self.transform = transforms.Compose(
            [
                transforms.Grayscale(),
                transforms.Resize((image_size, image_size)),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as image:
            return self.transform(image), self.labels[i]


@contextlib.contextmanager
def _prepared(raw: Path, params: Params) -> Iterator[Path]:
    """`prepare` into a temporary directory, tracking into a temporary MLflow store."""
    from cxraug.data.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="cxraug-bench-") as tmp:
        before = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        try:
            prepare(params.prepare, raw, Path(tmp) / "prepared", Path(tmp) / "prepare.json")
        finally:
            if before is None:
                os.environ.pop("MLFLOW_TRACKING_URI")
            else:
                os.environ["MLFLOW_TRACKING_URI"] = before
        yield Path(tmp) / "prepared"


def _png_paths(raw: Path, train: Split) -> list[str]:
    from cxraug.data.sources import read_source

    source = read_source(raw)
    if source.kind != "nih":
        raise CxraugError(f"{raw}: the plain-loop baseline needs PNG files (an NIH-layout directory)")
    path_of = dict(zip(source.records["image_index"], source.records["path"], strict=True))
    return [path_of[name] for name in pd.Series(train.image_index)]


class Loop:
    """One way of running the BAGAN steps: nets, optimisers and a source of batches."""

    def __init__(
        self, name, params: Params, train: Split, precision: Precision, fused: bool, batches
    ) -> None:
        p = params.train_bagan
        self.name, self.precision, self.batches, self.batch_size = name, precision, batches, p.batch_size
        seed_everything(p.seed)
        self.nets = BaganNets.build(architecture(p, train)).apply(precision.module)
        betas = (p.beta1, p.beta2)
        opt = adam if fused else lambda ps, lr, betas: torch.optim.Adam(ps, lr=lr, betas=betas)
        self.opt_ae = opt([*self.nets.encoder.parameters(), *self.nets.decoder.parameters()], p.lr_ae, betas)
        self.opt_g = opt(self.nets.generator.parameters(), p.lr_g, betas)
        self.opt_d = opt(self.nets.discriminator.parameters(), p.lr_d, betas)
        # latents from N(0, I) for every class: as costly to draw as from fitted Gaussians
        dim, k = p.latent_dim, train.n_classes
        standard = ClassGaussians(
            train.classes, np.zeros((k, dim)), np.stack([np.eye(dim)] * k), np.ones(k), np.zeros(k)
        )
        self.sampler = LatentSampler(standard, precision.device)
        self.probs = class_probabilities(train.class_counts(), p.class_sampling)
        self.rng = torch.Generator().manual_seed(p.seed)
        self.n_fake = fakes_per_step(p.batch_size, k)

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = torch.multinomial(self.probs, n, replacement=True, generator=self.rng)
        return self.sampler(c, self.rng), c.to(self.precision.device)

    def autoencoder(self) -> None:
        x, _ = self.batches(self.precision)
        autoencoder_step(self.nets.encoder, self.nets.decoder, self.opt_ae, x, self.precision).item()

    def gan(self) -> None:
        x, y = self.batches(self.precision)
        n = self.nets
        gan_step(
            n.generator, n.discriminator, self.opt_g, self.opt_d, x, y, self.draw, self.n_fake, self.precision
        )["d_loss"].item()


def _alternating(loops: list[Loop], phase: str, steps: int, repeats: int) -> list[Rate]:
    """Time `steps` steps of each loop in turn, `repeats` rounds (after one warm-up step each), so that
    load from other jobs falls on both alike; report the median round."""
    runs = {loop.name: getattr(loop, phase) for loop in loops}
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(steps):
                run()
            times[name].append(time.perf_counter() - start)
    rates = []
    for loop in loops:
        seconds = statistics.median(times[loop.name]) / steps
        rates.append(Rate(loop.name, phase, 1 / seconds, loop.batch_size / seconds))
    return rates


def bench_bagan(raw: Path, params: Params, steps: int = 3, repeats: int = 3) -> tuple[list[Rate], str]:
    p = params.train_bagan
    device = pick_device(p.device)
    ours = pick_precision(device, p.precision)
    plain = Precision(device, bf16=False, channels_last=False)
    with _prepared(raw, params) as prepared:
        train = load_split(prepared, "train")
        paths = _png_paths(raw, train)
    # the plain loop decodes the raw PNG files, which outlive the temporary directory
    loader = torch.utils.data.DataLoader(
        PngDataset(paths, train.labels.tolist(), train.image_size), p.batch_size, shuffle=True, drop_last=True
    )
    on_device = train.to(device)
    order = torch.Generator().manual_seed(0)
    memory_batches = (
        idx.to(device) for _ in itertools.count() for idx in batch_indices(len(train), p.batch_size, order)
    )
    png_batches = (batch for _ in itertools.count() for batch in loader)

    def from_memory(precision):
        idx = next(memory_batches)
        return precision.batch(to_model_range(on_device.images[idx])), on_device.labels[idx]

    def from_png(precision):
        x, y = next(png_batches)
        return precision.batch(x), y.to(device)

    loops = [
        Loop("train_bagan (uint8 in memory)", params, train, ours, True, from_memory),
        Loop("plain (DataLoader over PNGs)", params, train, plain, False, from_png),
    ]
    rates = [r for phase in ("autoencoder", "gan") for r in _alternating(loops, phase, steps, repeats)]
    note = (
        f"{len(train)} training images of {raw}, {train.image_size} px, batch {p.batch_size}, "
        f"latent {p.latent_dim}, widths G {p.g_base} / D {p.d_base}, d_dropout {p.d_dropout}; "
        f"ours: {ours.describe()} + fused Adam; plain: {plain.describe()} + default Adam; "
        f"{torch.get_num_threads()} threads; median of {repeats} alternating rounds of {steps} steps"
    )
    return rates, note


def markdown(rates: list[Rate]) -> str:
    plain = {r.phase: r for r in rates if r.loop.startswith("plain")}
    lines = ["| loop | phase | steps/s | real images/s | vs plain |", "|---|---|---:|---:|---:|"]
    for r in rates:
        ratio = r.steps_per_second / plain[r.phase].steps_per_second if r.phase in plain else float("nan")
        lines.append(
            f"| {r.loop} | {r.phase} | {r.steps_per_second:.2f} | {r.images_per_second:,.0f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)
