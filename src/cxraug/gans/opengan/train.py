"""`train_opengan` stage: G(z, e) and D(x, e) trained adversarially, e = frozen embeddings of real images.

Each step takes a (class-balanced) batch of real training images and their embeddings e; D learns
real (x, e) from fake (G(z, e), e); G learns to fool D and, optionally, to make the embedder place G(z, e)
near e. Classes the embedder was not trained on are left out here too (the open-set experiment).
Outputs: models/opengan/ (see cxraug.gans.opengan.proposer) and metrics/train_opengan.json.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from cxraug.core import distributed
from cxraug.core.checkpoint import Checkpointer
from cxraug.core.config import TrainOpenganParams
from cxraug.core.distributed import WHOLE, Shard
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import (
    Precision,
    atomic_write,
    atomic_write_json,
    file_md5,
    pick_device,
    pick_precision,
    progress,
    seed_everything,
    slug,
)
from cxraug.core.stage import NO_HOOKS, EpochEnd, Hooks
from cxraug.core.tracking import MetricBuffer, params_hash, stage_run
from cxraug.core.training import EMA, StepLog, adam, epoch_batches, standing_statistics, steps_per_epoch
from cxraug.data.datasets import Split, load_split, to_model_range
from cxraug.gans.diffaugment import diffaugment
from cxraug.gans.opengan.architectures import RECIPE_FILE, build_nets, recipe
from cxraug.gans.opengan.conditioning import make_conditioning, prototype, standing_inputs
from cxraug.gans.opengan.embedder import Embedder, embed, load_embedder, read_embedder_file
from cxraug.gans.opengan.losses import consistency_loss, discriminator_loss, generator_loss, mode_seeking_loss
from cxraug.gans.opengan.proposer import EMBEDDER_FILE, OpenganProposer, save_model
from cxraug.gans.opengan.tracking import log_samples

log = logging.getLogger(__name__)
STAGE = "train_opengan"
LOSS_KEYS = ("d_loss", "g_loss", "consistency", "d_real", "d_fake", "mode_seeking")  # gan/<key>, as BAGAN's


@dataclass
class OpenganResult:
    steps: int
    seconds: float
    steps_per_second: float
    resumed_from: int | None
    run_id: str
    summary: dict


def gan_step(
    generator: nn.Module,
    discriminator: nn.Module,
    embedder: Embedder,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    real: torch.Tensor,
    e: torch.Tensor,
    z: torch.Tensor,
    params: TrainOpenganParams,
    precision: Precision,
    shard: Shard = WHOLE,
    batch: int | None = None,
    update_g: bool = True,
) -> dict[str, torch.Tensor]:
    """One D update then (if `update_g`) one G update on real images [B, 1, S, S] with embeddings e [B, D].
    A D-only step (train_opengan.d_steps > 1) logs G's loss, consistency and mode-seeking terms as 0.

    Under torchrun `real`, `e` and `z` are this rank's rows of a global batch of `batch` images, G and D
    are DDP-wrapped, and every returned value is this rank's term of the global mean (Shard.scale).
    The D pass inside G's loss uses the plain D: it only carries gradients to the images."""
    n, batch = len(real), batch or len(real)
    half = n // 2 if update_g and params.mode_seeking_weight else 0  # rows drawn again with a second z
    z_all, e_all = (torch.cat([z, torch.randn_like(z[:half])]), torch.cat([e, e[:half]])) if half else (z, e)
    with precision.autocast(), torch.set_grad_enabled(update_g):
        drawn = generator(z_all, e_all)  # the pairs in the same pass: DDP sees one forward per backward
    fake = drawn[:n]
    seen = partial(diffaugment, policies=params.augment)  # D's view of any image, in both updates
    with precision.autocast():
        d_real, d_fake = discriminator(seen(real), e), discriminator(seen(fake.detach()), e)
    loss_d = shard.scale(discriminator_loss(d_real, d_fake, params.loss), n, batch)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    if not update_g:
        zero = torch.zeros((), device=loss_d.device)
        d_real, d_fake = shard.scale(d_real.mean(), n, batch), shard.scale(d_fake.mean(), n, batch)
        values = (loss_d, zero, zero, d_real, d_fake, zero)
        return {k: v.detach().float() for k, v in zip(LOSS_KEYS, values, strict=True)}

    judge = distributed.unwrap(discriminator)
    judge.requires_grad_(False)  # G's step needs gradients w.r.t. the images only
    with precision.autocast():
        loss_g = generator_loss(judge(seen(fake), e), params.loss)
        consistency = (
            consistency_loss(embedder, fake, e, params.consistency)
            if params.consistency_weight
            else torch.zeros(())
        )
        seeking = mode_seeking_loss(drawn[:half], drawn[n:], z_all[:half], z_all[n:]) if half else 0 * loss_g
    loss_g, consistency = shard.scale(loss_g, n, batch), shard.scale(consistency, n, batch)
    opt_g.zero_grad(set_to_none=True)
    # objective: fool D, stay consistent with e and (MSGAN) keep two z's of one e apart
    (loss_g + params.consistency_weight * consistency + params.mode_seeking_weight * seeking).backward()
    opt_g.step()
    judge.requires_grad_(True)
    d_real, d_fake = shard.scale(d_real.mean(), n, batch), shard.scale(d_fake.mean(), n, batch)
    values = (loss_d, loss_g, consistency, d_real, d_fake, shard.scale(seeking, n, batch))  # LOSS_KEYS' order
    return {k: v.detach().float() for k, v in zip(LOSS_KEYS, values, strict=True)}


@dataclass
class Conditioned:
    """The training split seen through the frozen embedder."""

    split: Split
    embedder: Embedder
    embeddings: torch.Tensor  # [N, D] of every training image, on the device
    trained: torch.Tensor  # bool [N]: image of a class the embedder (and so the GAN) trains on
    trained_classes: list[str]

    def banks(self) -> list[torch.Tensor]:
        return [
            self.embeddings[self.split.labels.to(self.embeddings.device) == c].cpu()
            for c in range(self.split.n_classes)
        ]


def condition(prepared_dir: Path, embedder_path: Path, device: torch.device) -> Conditioned:
    train = load_split(prepared_dir, "train")
    meta = read_embedder_file(embedder_path)
    if tuple(meta["classes"]) != train.classes or meta["config"]["image_size"] != train.image_size:
        raise CxraugError(
            f"{embedder_path} was trained on classes {meta['classes']} at {meta['config']['image_size']} px, "
            f"the prepared data has {list(train.classes)} at {train.image_size} px; rerun train_embedder"
        )
    embedder = load_embedder(embedder_path, device)
    trained_classes = list(meta["trained_classes"])
    trained = torch.isin(train.labels, torch.tensor([train.classes.index(c) for c in trained_classes]))
    return Conditioned(train, embedder, embed(embedder, train.images), trained, trained_classes)


def fixed_inputs(
    conditionings, latent_dim: int, per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (z, e) of the per-epoch grids: drawn once from their own seed, `per_class` rows per class."""
    g = torch.Generator().manual_seed(seed + 7919)
    e = torch.cat([c.draw(per_class, g) for c in conditionings])
    return torch.randn(len(e), latent_dim, generator=g), e


def sample_quality(proposer: OpenganProposer, n: int, seed: int) -> dict[str, dict[str, float]]:
    """Per class: mean score of n proposed candidates and the share whose nearest prototype is the class."""
    out = {}
    for c, name in enumerate(proposer.classes):
        images, scores = proposer.propose(c, n, torch.Generator().manual_seed(seed + c))
        emb = embed(proposer.embedder, images)
        hit = (emb @ proposer.prototypes.T).argmax(1) == proposer.targets[c]
        out[name] = {"mean_score": scores.mean().item(), "prototype_accuracy": hit.float().mean().item()}
    return out


def write_outputs(
    out_dir: Path,
    metrics_path: Path,
    embedder_path: Path,
    proposer: OpenganProposer,
    data: Conditioned,
    params: TrainOpenganParams,
    summary: dict,
) -> dict:
    """models/opengan/ (G, D, class banks, a copy of the embedder) and the metrics file; returns it."""
    import mlflow

    out_dir.mkdir(parents=True, exist_ok=True)
    save_model(
        out_dir,
        proposer.generator,
        proposer.discriminator,
        data.split.classes,
        data.trained_classes,
        data.banks(),
        params.conditioning,
        params.score_temperature,
    )
    atomic_write(out_dir / EMBEDDER_FILE, lambda tmp: shutil.copyfile(embedder_path, tmp))
    # what produced these weights, for the report's column label (via synthesize's provenance.json)
    atomic_write_json(out_dir / RECIPE_FILE, recipe(params))
    summary = {
        **summary,
        "samples": sample_quality(proposer, 64, params.seed),
        "trained_classes": data.trained_classes,
        "excluded_classes": [c for c in data.split.classes if c not in data.trained_classes],
        "conditioning": params.conditioning,
    }
    atomic_write_json(metrics_path, summary)
    step = summary["steps"]
    mlflow.log_metrics({k: summary[k] for k in ("steps_per_second", "images_per_second")}, step=step)
    accuracy = {
        f"final_prototype_accuracy/{slug(c)}": v["prototype_accuracy"] for c, v in summary["samples"].items()
    }
    mlflow.log_metrics(accuracy, step=step)
    mlflow.log_artifact(str(metrics_path))
    mlflow.log_artifacts(str(out_dir), artifact_path="opengan")  # the model files, as BAGAN's run has
    return summary


def train_opengan(
    params: TrainOpenganParams,
    prepared_dir: Path,
    embedder_path: Path,
    out_dir: Path,
    metrics_path: Path,
    checkpoint_dir: Path = Path("checkpoints") / STAGE,
    hooks: Hooks = NO_HOOKS,
) -> OpenganResult:
    """Train, evaluate and write the GAN. Under torchrun every rank trains its shard of each global batch
    (G and D in DDP, batch norm synchronised) and rank 0 alone tracks and writes. `hooks.on_step` is called
    after every step (benchmarks time the loop with it); `hooks.on_epoch` after each epoch's
    samples, with G and D in eval mode (Optuna's pruning probe; single process), and may raise to stop."""
    ctx = distributed.setup(pick_device(params.device))
    device = distributed.rank_device(pick_device(params.device), ctx)
    distributed.check_batch(params.batch_size, ctx, "train_opengan.batch_size")
    precision = pick_precision(device, params.precision)
    rng = seed_everything(params.seed)
    data = condition(prepared_dir, embedder_path, device)
    classes = data.split.classes
    everything = bool(data.trained.all())  # then no copy of a memory-mapped split
    images = (data.split.images if everything else data.split.images[data.trained]).to(device)
    labels = data.split.labels[data.trained].to(device)
    embeddings = data.embeddings[data.trained.to(device)]  # each real image's own conditioning e
    embedder = precision.module(data.embedder)

    size, embed_dim = data.split.image_size, data.embedder.embed_dim
    generator, discriminator = map(precision.module, build_nets(params, size, embed_dim))
    generator, discriminator = ctx.sync_batchnorm(generator), ctx.sync_batchnorm(discriminator)
    betas = (params.beta1, params.beta2)
    opt_g = adam(generator.parameters(), device, params.lr_g, betas)
    opt_d = adam(discriminator.parameters(), device, params.lr_d, betas)
    modules = {"generator": generator, "discriminator": discriminator}
    ema = EMA(generator, params.ema_decay) if params.ema_decay else None
    if ema is not None:  # checkpointed with the nets; it, not G, samples
        modules["generator_ema"] = ema
    optimizers = {"generator": opt_g, "discriminator": opt_d}

    per_epoch = steps_per_epoch(len(labels), params.batch_size, params.steps_per_epoch)
    total = per_epoch * params.epochs
    inputs = [prepared_dir / "train.npz", embedder_path]
    checkpoints = Checkpointer(
        checkpoint_dir / "state.pt", params_hash(params) + "-" + "-".join(file_md5(p) for p in inputs)
    )
    resumed = checkpoints.restore(modules, optimizers, rng)
    step = resumed.step if resumed else 0
    if resumed and ctx.is_main:
        log.info("resuming %s from checkpoint: step %d of %d", STAGE, step, total)
    ctx.decorrelate(params.seed)
    g_train, d_train = ctx.wrap(generator), ctx.wrap(discriminator)  # DDP for the training passes

    banks = data.banks()
    conditionings = [make_conditioning(params.conditioning, b) for b in banks]
    proposer = OpenganProposer(
        classes=classes,
        generator=generator if ema is None else ema.model,
        discriminator=discriminator,
        embedder=embedder,
        conditionings=conditionings,
        prototypes=torch.stack([prototype(b) for b in banks]),
        targets=list(range(len(classes))),
        temperature=params.score_temperature,
    )
    z_fixed, e_fixed = fixed_inputs(conditionings, params.latent_dim, params.grid_per_class, params.seed)

    tags = {
        "precision": precision.describe(),
        "trained_classes": ", ".join(data.trained_classes),
        "processes": str(ctx.world_size),
    }
    resume_run_id = resumed.run_id if resumed else None
    run = stage_run(
        experiment="opengan",
        stage=STAGE,
        params=params,
        inputs=inputs,
        resume_run_id=resume_run_id,
        extra_tags=tags,
    )
    summary: dict = {}
    with ctx.main_only(run) as run_id:
        metrics = MetricBuffer() if ctx.is_main else None
        steps = StepLog(ctx, metrics)
        if step == 0 and ctx.is_main:  # step 0 of the image slider, where MLflow's card opens
            generator.eval()
            log_samples(proposer, z_fixed, e_fixed, params.grid_per_class, 0, params.epochs)
        bar = progress(total=total, initial=step, desc="opengan", unit="step")
        start, start_step = time.perf_counter(), step
        for epoch in range(step // per_epoch, params.epochs):
            generator.train()
            discriminator.train()
            sums = dict.fromkeys(LOSS_KEYS, torch.zeros((), device=device))  # the last epoch's means
            count = 0
            batches = epoch_batches(labels, params.batch_size, per_epoch, params.balanced, params.seed, epoch)
            for idx in batches[step - epoch * per_epoch :]:  # a resumed epoch skips the batches it has done
                rows = ctx.shard.rows(len(idx))  # every rank draws the global batch, trains on its rows
                z = torch.randn(len(idx), params.latent_dim, generator=rng)[rows].to(device)
                idx = idx[rows].to(device)
                real = precision.batch(to_model_range(images[idx]))
                out = gan_step(
                    g_train,
                    d_train,
                    embedder,
                    opt_g,
                    opt_d,
                    real,
                    embeddings[idx],
                    z,
                    params,
                    precision,
                    ctx.shard,
                    params.batch_size,
                    update_g=(step + 1) % params.d_steps == 0,
                )
                if ema is not None and (step + 1) % params.d_steps == 0:
                    ema.update(generator)
                step += 1
                sums, count = {k: sums[k] + out[k] for k in LOSS_KEYS}, count + 1
                steps.add({f"gan/{k}": v for k, v in out.items()}, step)
                bar.update()
                if steps.last:
                    last = steps.last
                    bar.set_postfix(
                        d=f"{last['gan/d_loss']:.3f}", g=f"{last['gan/g_loss']:.3f}", epoch=epoch + 1
                    )
                if step % params.checkpoint_every == 0 and step < total:
                    steps.flush()  # what is logged matches what a resumed run starts from
                    checkpoints.save(  # rank 0 writes
                        step=step,
                        epoch=epoch,
                        modules=modules,
                        optimizers=optimizers,
                        generator=rng,
                        run_id=run_id,
                    )
                if hooks.on_step is not None:
                    hooks.on_step("gan", step, modules)
            steps.flush()
            last_epoch = ctx.mean_dict({k: v / max(1, count) for k, v in sums.items()})
            generator.eval()
            discriminator.eval()
            if ema is not None:  # every rank: under DDP its batch norms are synchronised
                standing_statistics(ema.model, standing_inputs(labels, embeddings, params, epoch, device))
            if ctx.is_main:
                samples = log_samples(
                    proposer, z_fixed, e_fixed, params.grid_per_class, epoch + 1, params.epochs
                )
                metrics.log({**samples, "epoch": epoch + 1}, step)
                metrics.flush()
            if hooks.on_epoch is not None:
                hooks.on_epoch(EpochEnd("gan", epoch + 1, modules, proposer))
        bar.close()
        seconds = time.perf_counter() - start
        rate = (step - start_step) / seconds if step > start_step else float("nan")

        if ctx.is_main:
            summary = write_outputs(
                out_dir,
                metrics_path,
                embedder_path,
                proposer,
                data,
                params,
                {
                    "steps": step,
                    "epochs": params.epochs,
                    "seconds": round(seconds, 2),
                    "steps_per_second": round(rate, 3),
                    "images_per_second": round(rate * params.batch_size, 1),
                    "last_epoch": {k: float(v) for k, v in last_epoch.items()},
                    "precision": precision.describe(),
                    "processes": ctx.world_size,
                    "mlflow_run_id": run_id,
                },
            )
        checkpoints.remove()
    ctx.barrier()  # the outputs exist before any rank returns
    return OpenganResult(step, seconds, rate, resumed.step if resumed else None, run_id, summary)
