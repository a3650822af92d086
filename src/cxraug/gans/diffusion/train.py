"""`train_diffusion` stage: a class-conditional DDPM on the prepared training split.

Each step takes a (class-balanced) batch of real images at the denoiser's resolution, a random timestep
and Gaussian noise per image, replaces each label by the null label with probability `label_dropout`
(classifier-free guidance), and regresses the added noise (MSE). An EMA of the weights is what samples.
After every epoch a grid per class from fixed noise goes to MLflow's image slider.
Outputs: models/diffusion/seed<k>/ (see cxraug.gans.diffusion.proposer), metrics/train_diffusion/seed<k>.json;
checkpoints/train_diffusion/state.pt every `checkpoint_every` steps, resumed (same MLflow run) on rerun.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from cxraug.core import distributed
from cxraug.core.checkpoint import Checkpointer
from cxraug.core.config import TrainDiffusionParams
from cxraug.core.distributed import WHOLE, Shard
from cxraug.core.runtime import (
    Precision,
    atomic_write_json,
    pick_device,
    pick_precision,
    progress,
    seed_everything,
)
from cxraug.core.stage import NO_HOOKS, EpochEnd, Hooks
from cxraug.core.tracking import MetricBuffer, log_labelled_grid, stage_run
from cxraug.core.training import StepLog, adam, epoch_batches, evaluating, fingerprint, steps_per_epoch
from cxraug.data.datasets import Split, load_split, to_model_range
from cxraug.gans.diffusion.nets import (
    EMA,
    Architecture,
    build_unet,
    to_resolution,
    train_scheduler,
    training_target,
)
from cxraug.gans.diffusion.proposer import DiffusionProposer, Sampling, save_model

log = logging.getLogger(__name__)
STAGE = "train_diffusion"


@dataclass
class DiffusionResult:
    steps: int
    seconds: float
    steps_per_second: float
    resumed_from: int | None
    run_id: str
    summary: dict


def architecture(params: TrainDiffusionParams, train: Split) -> Architecture:
    return Architecture(
        image_size=train.image_size,
        resolution=params.resolution or train.image_size,
        n_classes=train.n_classes,
        widths=tuple(params.widths),
        layers_per_block=params.layers_per_block,
        attention=params.attention,
        train_timesteps=params.train_timesteps,
        beta_schedule=params.beta_schedule,
        prediction_type=params.prediction_type,
    )


def sampling(params: TrainDiffusionParams) -> Sampling:
    return Sampling(params.sampler, params.sampler_steps, params.guidance_scale, params.sample_batch_size)


def noising(
    x0: torch.Tensor, labels: torch.Tensor, arch: Architecture, p_null: float, rng: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A step's random draws for a global batch, from the run's CPU generator (a resumed run continues
    the same stream): noise like x0, timesteps and the labels after dropout to the null label."""
    n = len(x0)
    noise = torch.randn(x0.shape, generator=rng)
    t = torch.randint(0, arch.train_timesteps, (n,), generator=rng)
    dropped = torch.rand(n, generator=rng) < p_null
    return noise, t, torch.where(dropped, arch.null_label, labels.cpu())


def diffusion_step(
    unet: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    schedule,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    labels: torch.Tensor,
    precision: Precision,
    shard: Shard = WHOLE,
    batch: int | None = None,
) -> torch.Tensor:
    """One update on clean images x0 [B, 1, r, r] in [-1, 1] (regressing the noise or v); returns the
    loss (this rank's term of the global mean under torchrun)."""
    noisy = schedule.add_noise(x0, noise, t)
    with precision.autocast():
        predicted = unet(noisy, t, class_labels=labels).sample
    target = training_target(schedule, x0, noise, t)
    loss = shard.scale(F.mse_loss(predicted.float(), target), len(x0), batch or len(x0))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def held_out_loss(
    unet: torch.nn.Module, arch: Architecture, schedule, split: Split, device: torch.device, seed: int
) -> float:
    """The training loss (noise or v MSE) on (up to 512) val images at fixed timesteps and noise,
    conditional branch."""
    g = torch.Generator().manual_seed(seed + 104729)
    x0 = to_resolution(to_model_range(split.images[:512]), arch.resolution)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, arch.train_timesteps, (len(x0),), generator=g)
    with evaluating(unet):
        noisy = schedule.add_noise(x0, noise, t).to(device)
        predicted = unet(noisy, t.to(device), class_labels=split.labels[:512].to(device)).sample
    return F.mse_loss(predicted.float().cpu(), training_target(schedule, x0, noise, t)).item()


def log_samples(proposer: DiffusionProposer, noise: torch.Tensor, per_class: int, epoch: int | None) -> float:
    """A row per class from fixed noise on the `samples/by_class` slider at `epoch` (a square card
    grid), or (epoch None) one final labelled grid file; returns the sampler's images per second."""
    labels = torch.arange(len(proposer.classes)).repeat_interleave(per_class)
    start = time.perf_counter()
    images = proposer.generate(labels, noise)
    rate = len(images) / (time.perf_counter() - start)
    rows = list(images.chunk(len(proposer.classes)))
    if epoch is None:
        log_labelled_grid(rows, proposer.classes, "diffusion samples, final", "samples/by_class_final")
    else:
        when = f"epoch {epoch}" if epoch else "before training (epoch 0)"
        log_labelled_grid(rows, proposer.classes, f"diffusion samples, {when}", "samples/by_class", epoch)
    return rate


def lr_at(params: TrainDiffusionParams, step: int, total: int) -> float:
    """Linear warm-up, then constant or a cosine decay that reaches 0 after the last of `total` steps
    (a function of the step alone: nothing to checkpoint)."""
    warm = min(1.0, (step + 1) / max(1, params.warmup_steps))
    if params.lr_schedule == "constant" or step < params.warmup_steps:
        return params.lr * warm
    done = (step + 1 - params.warmup_steps) / max(1, total - params.warmup_steps)
    return params.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def train_diffusion(
    params: TrainDiffusionParams,
    prepared_dir: Path,
    out_dir: Path,
    metrics_path: Path,
    checkpoint_dir: Path,
    hooks: Hooks = NO_HOOKS,
) -> DiffusionResult:
    """Train, sample and write the model. Under torchrun every rank trains its rows of each global batch
    (the U-Net in DDP) and rank 0 alone tracks, samples and writes. `hooks.on_step("diffusion", step,
    nets)` after every step; `hooks.on_epoch(EpochEnd)` after each epoch's grids, with a proposer over the
    EMA weights as they are then."""
    prepared_dir, out_dir, checkpoint_dir = Path(prepared_dir), Path(out_dir), Path(checkpoint_dir)
    ctx = distributed.setup(pick_device(params.device))
    device = distributed.rank_device(pick_device(params.device), ctx)
    distributed.check_batch(params.batch_size, ctx, "train_diffusion.batch_size")
    precision = pick_precision(device, params.precision)
    rng = seed_everything(params.seed)
    train, val = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    arch = architecture(params, train)
    unet = precision.module(build_unet(arch))
    ema = EMA(unet, params.ema_decay)
    optimizer = adam(unet.parameters(), device, params.lr, weight_decay=params.weight_decay, decoupled=True)
    schedule = train_scheduler(arch)
    labels = train.labels

    per_epoch = steps_per_epoch(len(labels), params.batch_size, params.steps_per_epoch)
    total = per_epoch * params.epochs
    inputs = [prepared_dir / "train.npz", prepared_dir / "val.npz"]
    checkpoints = Checkpointer(checkpoint_dir / "state.pt", fingerprint(params, inputs))
    modules = {"unet": unet, "ema": ema}
    resumed = checkpoints.restore(modules, {"unet": optimizer}, rng)
    step = resumed.step if resumed else 0
    if resumed and ctx.is_main:
        log.info("resuming %s from step %d of %d", STAGE, step, total)
    ctx.decorrelate(params.seed)
    trained = ctx.wrap(unet)

    proposer = DiffusionProposer(ema.model, arch, train.classes, sampling(params), precision)
    fixed = torch.Generator().manual_seed(params.seed + 7919)
    grid_noise = proposer.noise(len(train.classes) * params.grid_per_class, fixed)
    run = stage_run(
        experiment="diffusion",
        stage=STAGE,
        params=params,
        inputs=inputs,
        resume_run_id=resumed.run_id if resumed else None,
        extra_tags={
            "precision": precision.describe(),
            "processes": str(ctx.world_size),
            "resumed_from": f"step {resumed.step}" if resumed else "none",
        },
    )
    summary: dict = {}
    with ctx.main_only(run) as run_id:
        metrics = MetricBuffer() if ctx.is_main else None
        steps = StepLog(ctx, metrics, params.log_every)
        bar = progress(total=total, initial=step, desc="diffusion", unit="step")
        start, start_step, sampler_rate = time.perf_counter(), step, float("nan")
        if ctx.is_main and step == 0:  # step 0 of the slider, where MLflow's card opens: the untrained model
            log_samples(proposer, grid_noise, params.grid_per_class, 0)
        for epoch in range(step // per_epoch, params.epochs):
            unet.train()
            batches = epoch_batches(labels, params.batch_size, per_epoch, params.balanced, params.seed, epoch)
            for idx in batches[step - epoch * per_epoch :]:  # a resumed epoch skips the batches it has done
                x0 = to_resolution(to_model_range(train.images[idx]), arch.resolution)  # [-1, 1], r px
                noise, t, y = noising(x0, labels[idx], arch, params.label_dropout, rng)
                rows = ctx.shard.rows(len(idx))  # every rank draws the global batch, trains on its rows
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(params, step, total)
                loss = diffusion_step(
                    trained,
                    optimizer,
                    schedule,
                    precision.batch(x0[rows]),
                    noise[rows].to(device),
                    t[rows].to(device),
                    y[rows].to(device),
                    precision,
                    ctx.shard,
                    params.batch_size,
                )
                ema.update(unet)
                step += 1
                steps.add({"loss": loss, "lr": torch.tensor(lr_at(params, step - 1, total))}, step)
                bar.update()
                if steps.last:
                    bar.set_postfix(loss=f"{steps.last['loss']:.4f}", epoch=epoch + 1)
                if step % params.checkpoint_every == 0 and step < total:
                    steps.flush()  # what is logged matches what a resumed run starts from
                    checkpoints.save(
                        step=step,
                        epoch=epoch,
                        modules=modules,
                        optimizers={"unet": optimizer},
                        generator=rng,
                        run_id=run_id,
                    )
                if hooks.on_step is not None:
                    hooks.on_step("diffusion", step, modules)
            steps.flush()
            if ctx.is_main:
                sampler_rate = log_samples(proposer, grid_noise, params.grid_per_class, epoch + 1)
                metrics.log({"epoch": epoch + 1, "sampler_images_per_second": sampler_rate}, step)
                metrics.flush()
            if hooks.on_epoch is not None:
                with evaluating(unet, ema.model):
                    hooks.on_epoch(
                        EpochEnd("diffusion", epoch + 1, {"unet": unet, "ema": ema.model}, proposer)
                    )
        bar.close()
        seconds = time.perf_counter() - start
        rate = (step - start_step) / seconds if step > start_step else float("nan")
        if ctx.is_main:
            summary = write_outputs(
                out_dir,
                metrics_path,
                proposer,
                train,
                {
                    "steps": step,
                    "epochs": params.epochs,
                    "seconds": round(seconds, 2),
                    "steps_per_second": round(rate, 3),
                    "images_per_second": round(rate * params.batch_size, 1),
                    "last_loss": steps.last.get("loss"),
                    "val_loss": held_out_loss(ema.model, arch, schedule, val, device, params.seed),
                    "sampler": params.sampler,
                    "sampler_steps": params.sampler_steps,
                    "guidance_scale": params.guidance_scale,
                    "resolution": arch.resolution,
                    "precision": precision.describe(),
                    "processes": ctx.world_size,
                    "mlflow_run_id": run_id,
                },
                grid_noise,
                params.grid_per_class,
            )
        checkpoints.remove()
    ctx.barrier()  # the outputs exist before any rank returns
    return DiffusionResult(step, seconds, rate, resumed.step if resumed else None, run_id, summary)


def write_outputs(
    out_dir: Path,
    metrics_path: Path,
    proposer: DiffusionProposer,
    train: Split,
    summary: dict,
    grid_noise: torch.Tensor,
    per_class: int,
) -> dict:
    """models/diffusion/ (EMA weights + architecture + sampler), the final grid and the metrics file."""
    import mlflow

    save_model(
        out_dir, proposer.unet, proposer.arch, train.classes, proposer.sampling, train.class_counts().tolist()
    )
    summary = {
        **summary,
        "sampler_images_per_second": round(log_samples(proposer, grid_noise, per_class, None), 2),
        "train_images": dict(zip(train.classes, train.class_counts().tolist(), strict=True)),
    }
    atomic_write_json(metrics_path, summary)
    numeric = {f"final/{k}": float(v) for k, v in summary.items() if isinstance(v, int | float)}
    mlflow.log_metrics(numeric, step=summary["steps"])
    mlflow.log_artifact(str(metrics_path))
    mlflow.log_artifacts(str(out_dir), artifact_path="diffusion")
    return summary
