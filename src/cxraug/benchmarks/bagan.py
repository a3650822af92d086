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
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxraug.benchmarks.common import measure
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


def _png_paths(raw: Path, prepared: Path, train: Split) -> list[str]:
    from cxraug.data.sources import read_source

    source = read_source(raw)
    if source.kind != "nih":
        raise CxraugError(f"{raw}: the plain-loop baseline needs PNG files (an NIH-layout directory)")
    path_of = dict(zip(source.records["image_index"], source.records["path"], strict=True))
    return [path_of[name] for name in pd.Series(train.image_index)]


def bench_bagan(raw: Path, params: Params, steps: int = 20) -> tuple[list[Rate], str]:
    p = params.train_bagan
    device = pick_device(p.device)
    ours = pick_precision(device, p.precision)
    plain = Precision(device, bf16=False, channels_last=False)
    with _prepared(raw, params) as prepared:
        train = load_split(prepared, "train")
        paths = _png_paths(raw, prepared, train)
    # decode PNGs in the plain loop from the raw files, which outlive the temporary directory
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

    rates = []
    for loop, precision, fused, batches in (
        ("train_bagan (uint8 in memory)", ours, True, from_memory),
        ("plain (DataLoader over PNGs)", plain, False, from_png),
    ):
        rates += _bench_loop(loop, params, train, precision, fused, batches, steps)
    note = (
        f"{len(train)} training images of {raw}, {train.image_size} px, batch {p.batch_size}, "
        f"latent {p.latent_dim}, widths G {p.g_base} / D {p.d_base}; ours: {ours.describe()} + fused Adam; "
        f"plain: {plain.describe()} + default Adam; {torch.get_num_threads()} threads"
    )
    return rates, note


def _bench_loop(loop, params, train, precision, fused, batches, steps) -> list[Rate]:
    p = params.train_bagan
    seed_everything(p.seed)
    nets = BaganNets.build(architecture(p, train)).apply(precision.module)
    opt = adam if fused else lambda ps, lr, betas: torch.optim.Adam(ps, lr=lr, betas=betas)
    betas = (p.beta1, p.beta2)
    opt_ae = opt([*nets.encoder.parameters(), *nets.decoder.parameters()], p.lr_ae, betas)
    opt_g, opt_d = (
        opt(nets.generator.parameters(), p.lr_g, betas),
        opt(nets.discriminator.parameters(), p.lr_d, betas),
    )

    def ae_steps():
        for _ in range(steps):
            x, _ = batches(precision)
            autoencoder_step(nets.encoder, nets.decoder, opt_ae, x, precision).item()

    ae = measure(loop, ae_steps, steps * p.batch_size, warmup=1, repeats=3)

    # latents from N(0, I) for every class: drawing them costs what drawing from fitted Gaussians costs
    dim, k = p.latent_dim, train.n_classes
    standard = ClassGaussians(
        train.classes, np.zeros((k, dim)), np.stack([np.eye(dim)] * k), np.ones(k), np.zeros(k)
    )
    sampler = LatentSampler(standard, precision.device)
    probs = class_probabilities(train.class_counts(), p.class_sampling)
    rng = torch.Generator().manual_seed(p.seed)

    def draw(n):
        c = torch.multinomial(probs, n, replacement=True, generator=rng)
        return sampler(c, rng), c.to(precision.device)

    n_fake = fakes_per_step(p.batch_size, k)

    def gan_steps():
        for _ in range(steps):
            x, y = batches(precision)
            m = gan_step(nets.generator, nets.discriminator, opt_g, opt_d, x, y, draw, n_fake, precision)
            m["d_loss"].item()

    gan = measure(loop, gan_steps, steps * p.batch_size, warmup=1, repeats=3)
    return [
        Rate(loop, phase, m.per_second / p.batch_size, m.per_second)
        for phase, m in (("autoencoder", ae), ("gan", gan))
    ]


def markdown(rates: list[Rate]) -> str:
    plain = {r.phase: r for r in rates if r.loop.startswith("plain")}
    lines = ["| loop | phase | steps/s | real images/s | vs plain |", "|---|---|---:|---:|---:|"]
    for r in rates:
        ratio = r.steps_per_second / plain[r.phase].steps_per_second if r.phase in plain else float("nan")
        lines.append(
            f"| {r.loop} | {r.phase} | {r.steps_per_second:.2f} | {r.images_per_second:,.0f} | {ratio:.2f}x |"
        )
    return "\n".join(lines)
