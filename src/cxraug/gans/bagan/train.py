"""`train_bagan` stage: BAGAN (Mariani et al. 2018) on the prepared training split, and its Proposer.

1. autoencoder (encoder = D's conv trunk + a latent head, decoder = the generator) on real training images;
2. one Gaussian per class (mean, full covariance) over the encoder's codes of that class's images;
3. GAN: G starts as the decoder, D's trunk as the encoder; D has K+1 outputs (K classes + "generated").

Outputs in <out>: autoencoder.pt, generator.pt, discriminator.pt (state dicts), class_gaussians.npz,
bagan.json (architecture, classes) and samples.png (one row per class). Checkpoints in <checkpoints>:
autoencoder.pt (kept until the stage ends) and gan.pt; a rerun resumes from them in the same MLflow run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from cxraug.core import distributed, tracking
from cxraug.core.checkpoint import Checkpointer, Resumed
from cxraug.core.config import TrainBaganParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import (
    atomic_save,
    atomic_write,
    atomic_write_json,
    pick_device,
    pick_precision,
    seed_everything,
)
from cxraug.core.stage import NO_HOOKS, Hooks
from cxraug.core.tracking import labelled_grid
from cxraug.core.training import adam, fingerprint
from cxraug.data.datasets import Split, load_split
from cxraug.gans.bagan.critic import discriminator_probabilities, discriminator_report
from cxraug.gans.bagan.latent import ClassGaussians, LatentSampler, fit_class_gaussians
from cxraug.gans.bagan.nets import (
    Architecture,
    BaganNets,
    init_gan_from_autoencoder,
)
from cxraug.gans.bagan.phases import (
    Session,
    discriminator_on,
    encode,
    fixed_latents,
    generate,
    reconstruction_error,
    train_autoencoder,
)
from cxraug.gans.bagan.phases import train_gan as run_gan
from cxraug.gans.bagan.steps import fakes_per_step
from cxraug.gans.bagan.tracking import BaganTracker

EXPERIMENT = "bagan"
log = logging.getLogger(__name__)
STAGE = "train_bagan"


@dataclass
class BaganResult:
    run_id: str
    metrics: dict


def architecture(params: TrainBaganParams, train: Split) -> Architecture:
    return Architecture(
        image_size=train.image_size,
        latent_dim=params.latent_dim,
        g_base=params.g_base,
        d_base=params.d_base,
        d_dropout=params.d_dropout,
        n_classes=train.n_classes,
    )


def train_bagan(
    params: TrainBaganParams,
    prepared_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    checkpoint_dir: Path,
    hooks: Hooks = NO_HOOKS,
) -> BaganResult:
    start = time.perf_counter()
    inputs = [Path(prepared_dir) / "train.npz", Path(prepared_dir) / "val.npz"]
    train, val = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    if val.classes != train.classes:
        raise CxraugError(f"{prepared_dir}: train and val list different classes; rerun `cxraug prepare`")
    ctx = distributed.setup(pick_device(params.device))  # one process, or this rank under torchrun
    device = distributed.rank_device(pick_device(params.device), ctx)
    distributed.check_batch(fakes_per_step(params.batch_size, train.n_classes), ctx, "train_bagan.batch_size")
    precision = pick_precision(device, params.precision)  # before seeding: 'auto' times a few convs
    rng = seed_everything(params.seed)  # global RNGs: weight init, dropout; rng: batches' latents
    arch = architecture(params, train)
    nets = BaganNets.build(arch).apply(precision.module).apply(ctx.sync_batchnorm)
    betas = (params.beta1, params.beta2)
    optimizers = {
        "autoencoder": adam(
            [*nets.encoder.parameters(), *nets.decoder.parameters()], device, params.lr_ae, betas
        ),
        "generator": adam(nets.generator.parameters(), device, params.lr_g, betas),
        "discriminator": adam(nets.discriminator.parameters(), device, params.lr_d, betas),
    }
    checkpoints = PhaseCheckpoints(Path(checkpoint_dir), fingerprint(params, inputs), nets, optimizers, rng)
    resumed_ae, resumed_gan = checkpoints.restore()
    resumed = resumed_gan or resumed_ae
    ae_done = bool(resumed_ae and resumed_ae.extra.get("done"))
    ctx.decorrelate(params.seed)  # each rank its own dropout masks

    run = tracking.stage_run(
        experiment=EXPERIMENT,
        stage=STAGE,
        params=params,
        inputs=inputs,
        resume_run_id=resumed.run_id if resumed else None,
        extra_tags={
            "precision": precision.describe(),
            "resumed_from": _describe_resume(resumed_ae, resumed_gan),
            "processes": str(ctx.world_size),
        },
    )
    metrics: dict = {}
    with ctx.main_only(run) as run_id:
        tracker = BaganTracker(train.classes, params.log_every, ctx)
        s = Session(
            params, nets, optimizers, train.to(device), val.to(device), precision, rng, tracker, hooks, ctx
        )
        s.wrapped = nets.apply(ctx.wrap) if ctx.distributed else None
        if resumed and ctx.is_main:
            per_epoch = s.steps_per_epoch
            ae_steps, gan_steps = params.ae_epochs * per_epoch, params.epochs * per_epoch
            log.info(resume_message(resumed_ae, resumed_gan, ae_steps, gan_steps))

        timer, ae_start = time.perf_counter(), resumed_ae.step if resumed_ae else 0
        if not ae_done:
            train_autoencoder(s, ae_start, partial(checkpoints.save, "autoencoder", run_id=run_id))
            checkpoints.save(
                "autoencoder", params.ae_epochs * s.steps_per_epoch, params.ae_epochs, run_id, done=True
            )
        rates = {"ae_steps_per_second": _rate(params.ae_epochs * s.steps_per_epoch - ae_start, timer)}
        if resumed_gan is None:
            init_gan_from_autoencoder(nets, params.init_discriminator_from_encoder)

        latents = encode(s, s.train.images)  # every rank fits the same Gaussians (it draws latents too)
        gaussians = fit_class_gaussians(
            latents, train.labels.numpy(), train.classes, params.cov_ridge, params.cov_estimator
        )
        out_dir = Path(out_dir)
        if ctx.is_main:
            gaussians.save(out_dir / "class_gaussians.npz")
            tracker.gaussians(gaussians, latents, train.labels.numpy(), out_dir / "class_gaussians.npz")

        timer, gan_start = time.perf_counter(), resumed_gan.step if resumed_gan else 0
        run_gan(s, gaussians, gan_start, partial(checkpoints.save, "gan", run_id=run_id))
        rates["gan_steps_per_second"] = _rate(params.epochs * s.steps_per_epoch - gan_start, timer)

        if ctx.is_main:
            write_models(out_dir, nets, arch, train)
            atomic_write_json(out_dir / RECIPE_FILE, recipe(params))
            title = f"BAGAN samples after {params.epochs} epochs (a row per class)"
            save_png(out_dir / "samples.png", sample_grid(s, gaussians), train.classes, title)
            tracker.outputs(out_dir)
            metrics = summarize(s, run_id, rates, time.perf_counter() - start)
            tracker.final(metrics)
            atomic_write_json(metrics_path, metrics)
    ctx.barrier()  # the outputs exist before any rank returns
    checkpoints.remove()
    return BaganResult(run_id, metrics)


class PhaseCheckpoints:
    """One checkpoint per phase: the autoencoder's (nets, optimizer; `done` once finished, then kept until
    the stage ends) and the GAN's. Both carry the run's random generator and MLflow run id."""

    def __init__(
        self,
        directory: Path,
        fingerprint: str,
        nets: BaganNets,
        optimizers: dict[str, torch.optim.Optimizer],
        rng: torch.Generator,
    ) -> None:
        self.rng = rng
        self.files = {
            "autoencoder": Checkpointer(directory / "autoencoder.pt", fingerprint),
            "gan": Checkpointer(directory / "gan.pt", fingerprint),
        }
        self.state = {
            "autoencoder": (
                {"encoder": nets.encoder, "decoder": nets.decoder},
                {"autoencoder": optimizers["autoencoder"]},
            ),
            "gan": (
                {"generator": nets.generator, "discriminator": nets.discriminator},
                {k: optimizers[k] for k in ("generator", "discriminator")},
            ),
        }

    def restore(self) -> tuple[Resumed | None, Resumed | None]:
        """Load what was saved; the GAN's checkpoint counts only after a finished autoencoder."""
        ae = self.files["autoencoder"].restore(*self.state["autoencoder"], self.rng)
        if not (ae and ae.extra.get("done")):
            return ae, None
        return ae, self.files["gan"].restore(*self.state["gan"], self.rng)

    def save(self, phase: str, step: int, epoch: int, run_id: str, done: bool = False) -> None:
        modules, optimizers = self.state[phase]
        self.files[phase].save(
            step=step,
            epoch=epoch,
            modules=modules,
            optimizers=optimizers,
            generator=self.rng,
            run_id=run_id,
            extra={"done": done},
        )

    def remove(self) -> None:
        for checkpointer in self.files.values():
            checkpointer.remove()


def resume_message(ae: Resumed | None, gan: Resumed | None, ae_steps: int, gan_steps: int) -> str:
    """What a rerun picks up, e.g. 'resuming train_bagan from checkpoint: autoencoder done, GAN step 40
    of 84'."""
    if ae is not None and ae.extra.get("done"):
        where = "autoencoder done, " + (f"GAN step {gan.step} of {gan_steps}" if gan else "GAN not started")
    else:
        where = f"autoencoder step {ae.step if ae else 0} of {ae_steps}"
    return f"resuming {STAGE} from checkpoint: {where}"


def _describe_resume(ae: Resumed | None, gan: Resumed | None) -> str:
    if gan:
        return f"gan step {gan.step}"
    if ae:
        return f"autoencoder step {ae.step}" + (" (done)" if ae.extra.get("done") else "")
    return "none"


def _rate(steps: int, since: float) -> float | None:
    """Steps per second of this invocation (training plus its logging); None when nothing ran."""
    return steps / (time.perf_counter() - since) if steps > 0 else None


def summarize(s: Session, run_id: str, rates: dict[str, float | None], seconds: float) -> dict:
    """metrics/train_bagan.json: held-out checks of the final nets, sizes, throughput of this invocation."""
    p, per_epoch = s.params, s.steps_per_epoch
    d_probs = discriminator_probabilities(s.nets.discriminator, s.val.images, s.precision)
    return {
        "ae_val_loss": reconstruction_error(s, s.val.images),
        **{k.removeprefix("gan/"): v for k, v in discriminator_on(s, s.val).items()},
        **discriminator_report(d_probs, s.val.to("cpu")),
        "seed": p.seed,
        "ae_steps": p.ae_epochs * per_epoch,
        "gan_steps": p.epochs * per_epoch,
        **{k: v for k, v in rates.items() if v is not None},
        "seconds": seconds,
        "precision": s.precision.describe(),
        "train_images": dict(zip(s.train.classes, s.train.class_counts().tolist(), strict=True)),
        "mlflow_run_id": run_id,
    }


RECIPE_FILE = "recipe.json"


def recipe(params: TrainBaganParams) -> dict:
    """The choices that shape BAGAN's classes (docs/bagan.md, "Rare class"), for the report's label."""
    keys = ("cov_estimator", "cov_ridge", "class_sampling", "d_class_weight", "latent_dim")
    return {"gan": "bagan", "generator": "dcgan", **params.model_dump(include=set(keys))}


def write_models(out_dir: Path, nets: BaganNets, arch: Architecture, train: Split) -> None:
    cpu = lambda m: {k: v.detach().cpu().contiguous() for k, v in m.state_dict().items()}  # noqa: E731
    atomic_save({"encoder": cpu(nets.encoder), "decoder": cpu(nets.decoder)}, out_dir / "autoencoder.pt")
    atomic_save(cpu(nets.generator), out_dir / "generator.pt")
    atomic_save(cpu(nets.discriminator), out_dir / "discriminator.pt")
    atomic_write_json(
        out_dir / "bagan.json",
        {
            "architecture": arch.to_dict(),
            "classes": list(train.classes),
            "train_counts": train.class_counts().tolist(),
        },
    )


def sample_grid(s: Session, gaussians: ClassGaussians) -> torch.Tensor:
    """The final generator's images from the per-epoch fixed latents, class after class."""
    sampler = LatentSampler(gaussians, s.train.images.device)
    return generate(s, fixed_latents(sampler, s.train.n_classes, s.params.grid_per_class, s.params.seed))


def save_png(path: Path, images: torch.Tensor, classes: tuple[str, ...], title: str) -> None:
    from PIL import Image

    grid = labelled_grid(list(images.chunk(len(classes))), classes, title)
    atomic_write(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"))
