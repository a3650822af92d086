"""`cxraug bench compile`: does `torch.compile` make a training step faster on this device? The classifier
step and BAGAN's GAN step, each eager and compiled from the same weights, interleaved step by step
(benchmarks/ab.py): the median per-pair ratio compiled / eager - 1 with its 95% bootstrap interval, and
the seconds the first compiled step took (the compilation every process would pay).

A row says "faster" only when the whole interval lies below 0, "slower" when it lies above, "unresolved"
otherwise. The stages stay eager unless a row here says faster on the device at hand (issue 19's rule:
keep an optimisation only where it is measured to pay).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from cxraug.benchmarks.ab import Comparison, interleave, synchronize
from cxraug.benchmarks.common import table
from cxraug.classifier.train import classifier_optimizer, train_step
from cxraug.core.config import Params
from cxraug.core.runtime import Precision, pick_device, pick_precision, seed_everything
from cxraug.core.training import adam
from cxraug.data.datasets import to_model_range
from cxraug.gans.bagan.latent import ClassGaussians, LatentSampler, class_probabilities
from cxraug.gans.bagan.nets import Architecture, BaganNets
from cxraug.gans.bagan.steps import fakes_per_step
from cxraug.gans.bagan.steps import gan_step as bagan_gan_step
from cxraug.nets.vgg import build_vgg16

N_IMAGES = 512  # random uint8 images: a step's cost does not depend on what they show


@dataclass(frozen=True)
class CompileResult:
    loop: str
    batch: int
    eager_seconds: float  # median eager step
    compiled_seconds: float  # median compiled step
    first_compiled_step: float  # seconds, compilation included
    comparison: Comparison  # compiled vs eager

    def verdict(self) -> str:
        c = self.comparison
        return "faster" if c.high < 0 else "slower" if c.low > 0 else "unresolved"


def _data(size: int, classes: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N_IMAGES, size, size), dtype=torch.uint8, generator=g).to(device)
    labels = torch.randint(0, classes, (N_IMAGES,), generator=g).to(device)
    return images, labels, g


def _classifier_steps(params: Params, precision: Precision):
    p, size, k = params.classify, params.prepare.image_size, len(params.prepare.classes)
    images, labels, g = _data(size, k, precision.device)
    seed_everything(0)
    model = precision.module(
        build_vgg16(k, image_size=size, width=p.width, head=p.head, norm=p.norm, dropout=p.dropout)
    )

    def make(net):
        opt = classifier_optimizer(net, p, precision.device)
        return lambda: train_step(net, opt, images, labels, _idx(g, p.batch_size, precision), precision)

    return make(model), make(torch.compile(copy.deepcopy(model))), p.batch_size


def _bagan_steps(params: Params, precision: Precision):
    p, size, k = params.train_bagan, params.prepare.image_size, len(params.prepare.classes)
    images, labels, g = _data(size, k, precision.device)
    seed_everything(p.seed)
    arch = Architecture(
        image_size=size,
        latent_dim=p.latent_dim,
        g_base=p.g_base,
        d_base=p.d_base,
        d_dropout=p.d_dropout,
        n_classes=k,
    )
    nets = BaganNets.build(arch).apply(precision.module)
    dim, probs = p.latent_dim, class_probabilities(np.ones(k), "uniform")
    standard = ClassGaussians(
        tuple(params.prepare.classes),
        np.zeros((k, dim)),
        np.stack([np.eye(dim)] * k),
        np.ones(k),
        np.zeros(k),
    )
    sampler = LatentSampler(standard, precision.device)

    def draw(n: int):
        c = torch.multinomial(probs, n, replacement=True, generator=g)
        return sampler(c, g), c.to(precision.device)

    n_fake = fakes_per_step(p.batch_size, k)

    def make(generator, discriminator):
        opt_g = adam(generator.parameters(), precision.device, p.lr_g, (p.beta1, p.beta2))
        opt_d = adam(discriminator.parameters(), precision.device, p.lr_d, (p.beta1, p.beta2))

        def step():
            idx = _idx(g, p.batch_size, precision)
            x = precision.batch(to_model_range(images[idx]))
            bagan_gan_step(generator, discriminator, opt_g, opt_d, x, labels[idx], draw, n_fake, precision)

        return step

    eager = make(nets.generator, nets.discriminator)
    compiled = make(
        torch.compile(copy.deepcopy(nets.generator)), torch.compile(copy.deepcopy(nets.discriminator))
    )
    return eager, compiled, p.batch_size


def _idx(g: torch.Generator, batch: int, precision: Precision) -> torch.Tensor:
    return torch.randperm(N_IMAGES, generator=g)[:batch].to(precision.device)


LOOPS: dict[str, Callable] = {"classifier step": _classifier_steps, "BAGAN GAN step (D + G)": _bagan_steps}


def _first(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    synchronize()
    return time.perf_counter() - start


def run(params: Params, pairs: int = 12) -> list[CompileResult]:
    """Each loop eager vs compiled at params' nets, batch and precision (the classifier's precision for
    both: the stages resolve `auto` the same way)."""
    device = pick_device(params.classify.device)
    precision = pick_precision(device, params.classify.precision)
    results = []
    for loop, build in LOOPS.items():
        eager, compiled, batch = build(params, precision)
        first = _first(compiled)  # compiles here, outside the timed pairs
        c = interleave(compiled, eager, pairs)
        results.append(
            CompileResult(loop, batch, float(np.median(c.bare)), float(np.median(c.ours)), first, c)
        )
    return results


HEADER = (
    "loop",
    "batch",
    "eager s/step",
    "compiled s/step",
    "compiled / eager - 1 [95% CI]",
    "verdict",
    "first compiled step (s)",
)


def markdown(results: list[CompileResult], precision: str) -> str:
    rows = [
        [
            r.loop,
            str(r.batch),
            f"{r.eager_seconds:.3f}",
            f"{r.compiled_seconds:.3f}",
            f"{r.comparison.describe()}",
            r.verdict(),
            f"{r.first_compiled_step:.1f}",
        ]
        for r in results
    ]
    title = (
        f"torch.compile vs eager ({precision}), interleaved: the median per-pair ratio compiled / eager - 1"
    )
    return f"{title}\n\n{table(HEADER, rows, 'lrrrrlr')}\n"
