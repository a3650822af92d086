"""The baseline our GAN steps are compared with: a plain PyTorch loop in the style of pytorch/examples'
dcgan/main.py (written here, not copied), on the same networks and batch size.

What makes it the example's style: ImageFolder + PIL decoding in DataLoader workers every epoch
(grayscale, resize, ToTensor, Normalize), NCHW fp32, torch's default Adam; D is trained on a real batch
and on a generated batch with a backward pass each; G's loss goes through D without freezing it (D's
gradients are computed and then zeroed at its next step); the losses are read with .item() every step.
The work per step is otherwise ours: the same losses, the same numbers of real and generated images.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cxraug.benchmarks.common import synchronize
from cxraug.core.config import Params
from cxraug.core.errors import CxraugError
from cxraug.gans.bagan.nets import Architecture, BaganNets
from cxraug.gans.bagan.steps import fakes_per_step
from cxraug.gans.opengan.architectures import build_nets
from cxraug.gans.opengan.embedder import load_embedder
from cxraug.gans.opengan.losses import consistency_loss


def png_loader(folder: Path, image_size: int, batch_size: int, workers: int = 2, indexed: bool = False):
    """DataLoader over class folders of PNGs, decoding and resizing every image when it is drawn."""
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Grayscale(1),
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize((0.5,), (0.5,)),
        ]
    )

    class Indexed(datasets.ImageFolder):  # (image, class, position): to look up a stored embedding
        def __getitem__(self, i):
            return (*super().__getitem__(i), i)

    dataset = (Indexed if indexed else datasets.ImageFolder)(str(folder), transform=transform)
    if len(dataset) < batch_size:  # drop_last would leave no batch at all, and an endless loop waiting
        raise CxraugError(f"{folder}: {len(dataset)} images, fewer than a batch of {batch_size}")
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
    )  # fmt: skip


def _endless(loader):
    while True:
        yield from loader


def _median_step(step, batches, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        step(next(batches))
    synchronize()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(next(batches))  # the batch is drawn inside the timed step, as in the example's loop
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bagan_reference(
    folder: Path,
    params: Params,
    n_classes: int,
    device: torch.device,
    warmup: int,
    steps: int,
    workers: int = 2,
) -> float:
    """Median seconds of one BAGAN GAN step (D on B real + ceil(B/K) fakes, G on B + ceil(B/K))."""

    p = params.train_bagan
    size = params.prepare.image_size
    arch = Architecture(size, p.latent_dim, p.g_base, p.d_base, p.d_dropout, n_classes)
    torch.manual_seed(p.seed)
    nets = BaganNets.build(arch)
    g, d = nets.generator.to(device), nets.discriminator.to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=p.lr_g, betas=(p.beta1, p.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=p.lr_d, betas=(p.beta1, p.beta2))
    n_fake = fakes_per_step(p.batch_size, n_classes)

    def step(batch) -> None:
        real, labels = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        d.zero_grad()
        err_real = F.cross_entropy(d(real), labels)
        err_real.backward()
        fake = g(torch.randn(n_fake, p.latent_dim, device=device))
        err_fake = F.cross_entropy(d(fake.detach()), torch.full((n_fake,), n_classes, device=device))
        err_fake.backward()
        opt_d.step()
        g.zero_grad()
        classes = torch.randint(0, n_classes, (p.batch_size + n_fake,), device=device)
        err_g = F.cross_entropy(d(g(torch.randn(len(classes), p.latent_dim, device=device))), classes)
        err_g.backward()
        opt_g.step()
        _ = (err_real.item() + err_fake.item(), err_g.item())  # the example prints them every step

    loader = png_loader(folder, size, p.batch_size, workers)
    return _median_step(step, _endless(loader), warmup, steps)


def opengan_reference(
    folder: Path,
    params: Params,
    embedder_path: Path,
    device: torch.device,
    warmup: int,
    steps: int,
    workers: int = 2,
) -> float:
    """Median seconds of one OpenGAN step (hinge D on real and generated (x, e), G with consistency);
    e of each real image is looked up in a table computed once, as our stage does."""

    p, size = params.train_opengan, params.prepare.image_size
    frozen = load_embedder(embedder_path, device)
    loader = png_loader(folder, size, p.batch_size, workers, indexed=True)
    with torch.no_grad():  # every image's embedding, in the dataset's order (not timed)
        table = torch.cat(
            [frozen(x.to(device)) for x, *_ in torch.utils.data.DataLoader(loader.dataset, 256)]
        )
    torch.manual_seed(p.seed)
    g, d = (net.to(device) for net in build_nets(p, size, frozen.embed_dim))
    opt_g = torch.optim.Adam(g.parameters(), lr=p.lr_g, betas=(p.beta1, p.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=p.lr_d, betas=(p.beta1, p.beta2))

    def step(batch) -> None:
        real, e = batch[0].to(device, non_blocking=True), table[batch[2].to(device)]
        d.zero_grad()
        err_real = F.relu(1 - d(real, e)).mean()
        err_real.backward()
        fake = g(torch.randn(len(real), p.latent_dim, device=device), e)
        err_fake = F.relu(1 + d(fake.detach(), e)).mean()
        err_fake.backward()
        opt_d.step()
        g.zero_grad()
        err_g = -d(fake, e).mean() + p.consistency_weight * consistency_loss(frozen, fake, e, p.consistency)
        err_g.backward()
        opt_g.step()
        _ = (err_real.item() + err_fake.item(), err_g.item())

    return _median_step(step, _endless(loader), warmup, steps)
