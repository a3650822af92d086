"""`cxraug bench precision`: does bf16 change what the GAN learns? BAGAN's GAN step run twice from the same
initial weights on the same batches and latents, once in fp32 and once under bf16 autocast; the per-step
D and G losses side by side, the gap between the two generators' images for fixed latents at the end,
and the step time of each (on a CPU without native bf16, bf16 is the slow one)."""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cxraug.benchmarks.common import synchronize, table
from cxraug.core.config import Params, PrepareParams
from cxraug.core.runtime import Precision, pick_device, pick_precision
from cxraug.core.training import adam
from cxraug.data.datasets import load_split, to_model_range
from cxraug.data.demo import make_demo_data
from cxraug.data.prepare import prepare
from cxraug.gans.bagan.nets import BaganNets
from cxraug.gans.bagan.steps import fakes_per_step, gan_step
from cxraug.gans.bagan.train import architecture


@dataclass(frozen=True)
class PrecisionRun:
    precision: str
    d_losses: list[float]
    g_losses: list[float]
    step_seconds: float  # median
    samples: torch.Tensor  # generator output for fixed latents after the last step, fp32


def _train(nets, batches, latents, precision: Precision, p) -> PrecisionRun:

    g, d = (precision.module(copy.deepcopy(m)) for m in (nets.generator, nets.discriminator))
    opt_g, opt_d = (
        adam(g.parameters(), precision.device, p.lr_g, (p.beta1, p.beta2)),
        adam(d.parameters(), precision.device, p.lr_d, (p.beta1, p.beta2)),
    )
    d_losses, g_losses, times = [], [], []
    for (x, y), draws in zip(batches, latents, strict=True):
        queue = iter(draws)  # gan_step draws D's fakes, then G's latents: the precomputed pairs in order
        start = time.perf_counter()
        out = gan_step(
            g,
            d,
            opt_g,
            opt_d,
            precision.batch(x),
            y,
            lambda n, queue=queue: next(queue),
            fakes_per_step(len(x), 5),
            precision,
        )
        synchronize()
        times.append(time.perf_counter() - start)
        d_losses.append(float(out["d_loss"]))
        g_losses.append(float(out["g_loss"]))
    with torch.no_grad(), precision.autocast():
        samples = g(draws[0][0]).float()
    name = "bf16" if precision.bf16 else "fp32"
    return PrecisionRun(name, d_losses, g_losses, statistics.median(times[1:] or times), samples)


def run(params: Params, steps: int = 20, n_images: int = 300) -> tuple[PrecisionRun, PrecisionRun]:
    """fp32 and bf16 runs of `steps` BAGAN GAN steps with params' nets at params' image size."""

    p = params.train_bagan
    device = pick_device(p.device)
    with tempfile.TemporaryDirectory(prefix="cxraug-bench-precision-") as tmp:
        root = Path(tmp)
        make_demo_data(root / "raw", n_images=n_images, size=max(64, params.prepare.image_size), seed=0)
        size = params.prepare.image_size
        prepare(PrepareParams(image_size=size), root / "raw", root / "prepared", root / "prepare.json")
        train = load_split(root / "prepared", "train")
    torch.manual_seed(p.seed)
    nets = BaganNets.build(architecture(p, train))
    g = torch.Generator().manual_seed(0)
    batch, k = p.batch_size, train.n_classes
    n_fake = fakes_per_step(batch, k)
    batches, latents = [], []
    for _ in range(steps):
        idx = torch.randint(0, len(train), (batch,), generator=g)
        batches.append((to_model_range(train.images[idx]), train.labels[idx].to(device)))
        latents.append(
            [
                (
                    torch.randn(n, p.latent_dim, generator=g).to(device),
                    torch.randint(0, k, (n,), generator=g).to(device),
                )
                for n in (n_fake, batch + n_fake)
            ]
        )
    fp32 = _train(nets, batches, latents, pick_precision(device, "fp32"), p)
    bf16 = _train(nets, batches, latents, pick_precision(device, "bf16"), p)
    return fp32, bf16


def markdown(fp32: PrecisionRun, bf16: PrecisionRun) -> str:
    def mean(x: list[float]) -> float:
        return sum(x) / len(x)

    rows = []
    for r in (fp32, bf16):
        rows.append(
            [
                r.precision,
                f"{r.d_losses[0]:.4f}",
                f"{r.d_losses[-1]:.4f}",
                f"{mean(r.d_losses):.4f}",
                f"{r.g_losses[0]:.4f}",
                f"{r.g_losses[-1]:.4f}",
                f"{mean(r.g_losses):.4f}",
                f"{r.step_seconds:.3f}",
            ]
        )
    header = ["precision", "D loss first", "D loss last", "D loss mean", "G loss first", "G loss last"]
    header += ["G loss mean", "step (s)"]
    gaps_d = [abs(a - b) for a, b in zip(fp32.d_losses, bf16.d_losses, strict=True)]
    gaps_g = [abs(a - b) for a, b in zip(fp32.g_losses, bf16.g_losses, strict=True)]
    image_gap = (fp32.samples - bf16.samples).abs().mean().item()
    return (
        table(header, rows)
        + f"\n\n{len(gaps_d)} steps from the same weights and batches: largest |fp32 - bf16| loss gap D "
        f"{max(gaps_d):.4f}, G {max(gaps_g):.4f}; mean |pixel| gap of the final generators' images for fixed "
        f"latents {image_gap:.4f} (pixels in [-1, 1]); bf16 step "
        f"{bf16.step_seconds / fp32.step_seconds:.1f}x the fp32 step's time.\n"
    )
