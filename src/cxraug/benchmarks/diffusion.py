"""The diffusion generator's two costs: its training step (train_diffusion timed by its `on_step` hook vs
the same step in a bare loop, interleaved) and its sampler (the Proposer's batched, guided draws vs a
plain loop of U-Net calls and scheduler steps over the same net, batch and number of steps)."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import torch

from cxraug.benchmarks.ab import InterleavedClock, interleave
from cxraug.benchmarks.common import LoopResult, count_flops
from cxraug.core.config import Params
from cxraug.core.runtime import pick_device, pick_precision, seed_everything
from cxraug.core.stage import Hooks
from cxraug.core.training import adam
from cxraug.data.datasets import load_split, to_model_range
from cxraug.gans.diffusion.nets import build_unet, sampling_scheduler, to_resolution, train_scheduler
from cxraug.gans.diffusion.proposer import load_proposer
from cxraug.gans.diffusion.train import architecture, diffusion_step, noising, train_diffusion


def diffusion(prepared: Path, params: Params, budget) -> list[LoopResult]:
    """[training step, sampler]; the sampler draws one batch of `sample_batch_size` images."""
    p = params.train_diffusion.model_copy(update={"epochs": budget.epochs, "steps_per_epoch": budget.steps})
    step, note = _bare_step(prepared, p)
    clock = InterleavedClock(step, "diffusion", budget.steps)
    with tempfile.TemporaryDirectory(prefix="cxraug-bench-diffusion-") as tmp:
        out = Path(tmp)
        train_diffusion(p, prepared, out / "model", out / "metrics.json", out / "ckpt", Hooks(on_step=clock))
        device = pick_device(p.device)
        proposer = load_proposer(out / "model", device)
    trained = LoopResult(
        "diffusion step",
        p.batch_size,
        clock.bare_median(),
        clock.median(),
        count_flops(step),
        clock.extra_per_epoch(budget.epochs - 1),
        note,
        clock.comparison(),
    )
    return [trained, _sampler(proposer, p, budget)]


def _bare_step(prepared: Path, p):
    """train_diffusion's step on its own nets, and the row's note."""
    train = load_split(prepared, "train")
    device = pick_device(p.device)
    precision = pick_precision(device, p.precision)
    seed_everything(p.seed)
    arch = architecture(p, train)
    unet = precision.module(build_unet(arch))
    optimizer = adam(unet.parameters(), device, p.lr, weight_decay=p.weight_decay, decoupled=True)
    schedule, rng = train_scheduler(arch), torch.Generator().manual_seed(0)
    order = torch.Generator().manual_seed(1)

    def step():
        idx = torch.randperm(len(train), generator=order)[: p.batch_size]
        x0 = to_resolution(to_model_range(train.images[idx]), arch.resolution)
        noise, t, y = noising(x0, train.labels[idx], arch, p.label_dropout, rng)
        diffusion_step(
            unet,
            optimizer,
            schedule,
            precision.batch(x0),
            noise.to(device),
            t.to(device),
            y.to(device),
            precision,
        )

    return step, f"{arch.resolution} px, widths {list(arch.widths)}, {precision.describe()}"


def _sampler(proposer, p, budget) -> LoopResult:
    """Seconds per batch of images: the Proposer (uint8 out, noise drawn on the CPU) vs a bare loop."""
    n, arch, s = p.sample_batch_size, proposer.arch, proposer.sampling
    device, unet = proposer.precision.device, proposer.unet
    labels = torch.arange(n, device=device) % arch.n_classes
    null = torch.full_like(labels, arch.null_label)
    noise = torch.randn(n, 1, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(0))

    @torch.no_grad()
    def bare():
        scheduler = sampling_scheduler(arch, s.sampler)
        scheduler.set_timesteps(s.steps, device=device)
        x = noise.to(device)
        for t in scheduler.timesteps:
            with proposer.precision.autocast():  # the Proposer's precision: like with like
                both = unet(torch.cat([x, x]), t, class_labels=torch.cat([labels, null])).sample.float()
            conditional, unconditional = both.chunk(2)
            x = scheduler.step(unconditional + s.guidance * (conditional - unconditional), t, x).prev_sample
        return x

    g = torch.Generator()
    c = interleave(lambda: proposer.propose(0, n, g.manual_seed(0)), bare, budget.timed)
    note = f"{s.sampler} {s.steps} steps, guidance {s.guidance:g}, {proposer.precision.describe()}"
    ours, seconds = statistics.median(c.ours), statistics.median(c.bare)
    return LoopResult("diffusion sampler", n, seconds, ours, count_flops(bare), None, note, c)
