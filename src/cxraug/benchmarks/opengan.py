"""Throughput of the OpenGAN-style stages' hot loops, timed through the training code's own step functions:
an embedder step (two augmented views, supervised contrastive loss, fused AdamW), a GAN step (D update
then G update with the embedding-consistency term) and batched sampling + scoring by the proposer."""

from __future__ import annotations

import torch

from cxraug.benchmarks.common import Measurement, measure
from cxraug.config import Params
from cxraug.gans.conditioning import ExemplarConditioning
from cxraug.gans.embedder import Embedder, embedder_step
from cxraug.gans.opengan import OpenganProposer
from cxraug.gans.opengan_nets import Generator, ProjectionDiscriminator
from cxraug.gans.train_opengan import gan_step
from cxraug.gans.training import adam
from cxraug.runtime import pick_device, pick_precision


def bench_opengan(image_size: int, batch_size: int, params: Params | None) -> tuple[list[Measurement], str]:
    params = params or Params()
    pe, pg = params.train_embedder, params.train_opengan
    device = pick_device(pg.device)
    precision = pick_precision(device, pg.precision)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch_size, image_size, image_size), dtype=torch.uint8, generator=g).to(
        device
    )
    labels = torch.arange(batch_size, device=device) % 5

    embedder = precision.module(Embedder(image_size, pe.embed_dim, pe.base_width))
    opt_e = adam(embedder.parameters(), device, pe.lr, weight_decay=pe.weight_decay, decoupled=True)
    frozen = precision.module(Embedder(image_size, pe.embed_dim, pe.base_width)).eval().requires_grad_(False)
    generator = precision.module(Generator(image_size, pg.latent_dim, pe.embed_dim, pg.g_base_width))
    discriminator = precision.module(
        ProjectionDiscriminator(image_size, pe.embed_dim, pg.d_base_width, pg.spectral_norm)
    )
    opt_g = adam(generator.parameters(), device, pg.lr_g, (pg.beta1, pg.beta2))
    opt_d = adam(discriminator.parameters(), device, pg.lr_d, (pg.beta1, pg.beta2))
    real = precision.batch(images.unsqueeze(1).float() / 127.5 - 1)
    e = torch.nn.functional.normalize(torch.randn(batch_size, pe.embed_dim, generator=g), dim=1).to(device)
    z = torch.randn(batch_size, pg.latent_dim, generator=g).to(device)
    proposer = OpenganProposer(
        classes=("a",),
        generator=generator,
        discriminator=discriminator,
        embedder=frozen,
        conditionings=[ExemplarConditioning(e.cpu())],
        prototypes=e[:5],
        targets=[0],
        temperature=pg.score_temperature,
    )

    def sync(fn):
        def run():
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()

        return run

    n_sample = max(256, batch_size)
    rows = [
        measure(
            f"embedder step (batch {batch_size}, 2 views)",
            sync(
                lambda: embedder_step(
                    embedder, opt_e, images, labels, pe.temperature, pe.augment, g, precision
                )
            ),
            batch_size,
        ),
        measure(
            f"GAN step D+G (batch {batch_size}, consistency {pg.consistency_weight:g})",
            sync(lambda: gan_step(generator, discriminator, frozen, opt_g, opt_d, real, e, z, pg, precision)),
            batch_size,
        ),
        measure(
            f"propose: sample + score ({n_sample})", sync(lambda: proposer.propose(0, n_sample, g)), n_sample
        ),
    ]
    setting = (
        f"{image_size} px, {precision.describe()}, {torch.get_num_threads()} threads; embedder base "
        f"{pe.base_width}, G base {pg.g_base_width}, D base {pg.d_base_width}, embed_dim {pe.embed_dim}"
    )
    return rows, setting
