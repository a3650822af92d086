"""Train a VGG16 on given images, early-stopping on a validation split; predict; save and load it.

Knows nothing about DVC paths or variants, so the classify stage, Optuna (short runs) and CAS
(training on synthetic images only) all call the same `train_classifier`. The loop reads top to bottom:
one round of training, then the val AUC; the weights with the best val macro AUC are kept, training stops
after `patience` rounds without a better one. The test split never enters this module: the caller
predicts on it once with the returned model.

What a round is depends on `classify.budget`:
  steps (default)  `eval_every` optimizer steps, at most `steps` in all, whatever the training set's size:
                   every variant gets the same gradient steps and the same early-stopping schedule, so a
                   variant with 3,000 extra images per class does not also get several times the training.
                   The batches are consecutive epochs of the training set, epoch e shuffled by a generator
                   seeded with (seed, e), so a resumed run replays the same batches.
  epochs           one pass over the training set (or as many class-balanced draws), at most `epochs`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cxraug.classifier.predict import predict_proba
from cxraug.core import distributed
from cxraug.core.checkpoint import Checkpointer
from cxraug.core.config import ClassifyParams
from cxraug.core.distributed import WHOLE, Shard
from cxraug.core.runtime import (
    Precision,
    pick_device,
    pick_precision,
    seed_everything,
)
from cxraug.core.training import adam, run_epoch_batches
from cxraug.data.datasets import Split, to_model_range
from cxraug.metrics.auc import per_class_auc
from cxraug.nets.vgg import VGG16, build_vgg16

logger = logging.getLogger("cxraug.classify")  # the stage's messages (resume notes)


@dataclass(frozen=True)
class EpochLog:
    epoch: int  # 1-based evaluation round (an epoch under budget "epochs")
    train_loss: float
    val_auc: list[float]  # per class
    val_macro_auc: float
    seconds: float
    images_per_second: float
    step: int = 0  # optimizer steps taken when this round's val AUC was measured
    images_seen: int = 0  # training images (with repeats) those steps used


@dataclass
class TrainedClassifier:
    model: VGG16  # holds the best round's weights, in eval mode
    best_epoch: int  # its round
    best_val_macro_auc: float
    history: list[EpochLog] = field(default_factory=list)
    precision: Precision | None = None
    best_step: int = 0
    steps: int = 0  # optimizer steps taken in all (early stopping ends a run before its budget)
    images_seen: int = 0


def network_label(params: ClassifyParams) -> str:
    """The network as configured, for table headers: "VGG16-BN, pooled head", "VGG16, classic head",
    with the width when it is not VGG16's own ("VGG16-BN x1/16, pooled head")."""
    name = "VGG16-BN" if params.norm == "batch" else "VGG16"
    if params.width != 1:
        name += f" x1/{1 / params.width:g}" if params.width < 1 else f" x{params.width:g}"
    return f"{name}, {params.head} head"


def rounds(params: ClassifyParams) -> int:
    """Evaluation rounds of the budget: epochs, or ceil(steps / eval_every)."""
    return params.epochs if params.budget == "epochs" else -(-params.steps // params.eval_every)


def step_batches(
    labels: torch.Tensor, batch_size: int, seed: int, balanced: bool, start: int, stop: int
) -> Iterator[torch.Tensor]:
    """The index batches of steps start..stop-1 of the steps budget: consecutive epochs of the training
    set (`run_epoch_batches`), epoch e drawn from a generator seeded by (seed, e), so any step can be
    resumed from without replaying the optimizer."""
    per_epoch = max(1, len(labels) // batch_size) if len(labels) >= batch_size else 1
    epoch, skip = divmod(start, per_epoch)
    step = start
    while step < stop:
        state = np.random.SeedSequence([seed, 0xC1A5, epoch]).generate_state(1)[0]
        batches = run_epoch_batches(labels, batch_size, torch.Generator().manual_seed(int(state)), balanced)
        for i, idx in enumerate(batches):
            if i < skip:
                continue
            if step >= stop:
                return
            yield idx
            step += 1
        epoch, skip = epoch + 1, 0


def inverse_frequency_weights(labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Cross-entropy class weights N / (K n_c): inverse frequency, averaging 1 over the training images."""
    counts = torch.bincount(labels.cpu(), minlength=n_classes).float()
    if (counts == 0).any():
        raise ValueError(
            f"every class needs training images for inverse-frequency weights, got {counts.tolist()}"
        )
    return counts.sum() / (n_classes * counts)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    precision: Precision,
    class_weights: torch.Tensor | None = None,
    shard: Shard = WHOLE,
) -> torch.Tensor:
    """One optimizer step on the global batch `idx` of uint8 `images` [N, H, W] and `labels`, of which this
    process takes its shard: cross-entropy (weighted if `class_weights`). Returns this process's term of
    the global batch's mean loss (the loss itself in one process)."""
    mine = shard.take(idx)
    x, y = precision.batch(to_model_range(images[mine])), labels[mine]
    with precision.autocast():
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, weight=class_weights)
    if class_weights is None:
        loss = shard.scale(loss, len(mine), len(idx))
    else:  # a weighted mean divides by the summed weights of the whole global batch
        loss = shard.scale(loss, class_weights[y].sum(), class_weights[labels[idx]].sum())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def classifier_optimizer(
    model: nn.Module, params: ClassifyParams, device: torch.device
) -> torch.optim.Optimizer:
    return adam(model.parameters(), device, params.lr, weight_decay=params.weight_decay, decoupled=True)


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def train_classifier(
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    val: Split,
    params: ClassifyParams,
    seed: int,
    *,
    class_weights: torch.Tensor | None = None,
    balanced: bool = False,
    checkpoint: Checkpointer | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    run_id: str | None = None,
    device: torch.device | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainedClassifier:
    """Train a VGG16 (params.head/width/norm/weights_path) from uint8 [N, H, W] images, early-stopping on
    `val` macro AUC. `balanced`: each epoch draws N class-balanced indices instead of a shuffle.
    `checkpoint`: saved every epoch and resumed from (with the best weights so far). `on_epoch` sees every
    epoch's log (MLflow logging, Optuna pruning; on rank 0 only under torchrun). Returns the model with the
    best epoch's weights. Under torchrun every rank trains its shard of each global batch (DDP, batch norm
    synchronised over ranks) and gets the same model."""
    device = device or pick_device(params.device)
    ctx = distributed.setup(device)  # one process, or this rank's place under torchrun
    device = distributed.rank_device(device, ctx)
    distributed.check_batch(params.batch_size, ctx, "classify.batch_size")
    precision = pick_precision(device, params.precision)
    generator = seed_everything(seed)
    n_classes = val.n_classes
    model = build_vgg16(
        n_classes,
        image_size=val.image_size,
        width=params.width,
        head=params.head,
        norm=params.norm,
        dropout=params.dropout,
        weights_path=params.weights_path,
    )
    model = ctx.sync_batchnorm(precision.module(model))
    optimizer = classifier_optimizer(model, params, device)
    weights = None if class_weights is None else class_weights.float().to(device)

    images, labels = train_images.to(device), train_labels.to(device)
    cpu_labels = train_labels.cpu()
    val_images, val_labels = val.images.to(device), val.labels.numpy()

    best = {"epoch": 0, "auc": -1.0, "state": _cpu_state(model), "bad_epochs": 0, "history": []}
    best |= {"step": 0, "best_step": 0, "images_seen": 0}
    resumed = (
        checkpoint.restore({"model": model}, {"optimizer": optimizer}, generator) if checkpoint else None
    )
    if resumed is not None:
        best = {"step": resumed.step, "best_step": 0, "images_seen": 0, **resumed.extra}
        if ctx.is_main:
            logger.info(
                "resuming classifier seed %d from checkpoint: round %d of %d (step %d)",
                seed,
                resumed.epoch,
                rounds(params),
                resumed.step,
            )
    history = [EpochLog(**h) for h in best["history"]]
    start_epoch = resumed.epoch if resumed else 0
    ctx.decorrelate(seed)  # each rank its own dropout masks
    trained = ctx.wrap(model)  # DDP for the training passes; evaluation uses `model`

    for epoch in range(start_epoch + 1, rounds(params) + 1):
        if best["bad_epochs"] >= params.patience:
            break  # a resumed run that had already stopped
        started = time.perf_counter()
        model.train()
        total_loss, seen = torch.zeros((), device=device), 0
        if params.budget == "steps":
            stop = min(best["step"] + params.eval_every, params.steps)
            batches = step_batches(cpu_labels, params.batch_size, seed, balanced, best["step"], stop)
        else:
            batches = run_epoch_batches(cpu_labels, params.batch_size, generator, balanced)
        for idx in batches:
            idx = idx.to(device)
            loss = train_step(trained, optimizer, images, labels, idx, precision, weights, ctx.shard)
            total_loss += loss * len(idx)
            seen += len(idx)
            best["step"] += 1
            if on_step is not None:  # benchmarks time the loop with it
                on_step(seen // len(idx))
        best["images_seen"] += seen
        total_loss = ctx.mean(total_loss)  # the ranks' terms -> the global batches' mean loss
        train_seconds = time.perf_counter() - started

        scores = predict_proba(model, val_images, precision, params.eval_batch_size, ctx)
        val_auc = per_class_auc(scores, val_labels)
        entry = EpochLog(
            epoch=epoch,
            train_loss=float(total_loss) / max(seen, 1),
            val_auc=[float(a) for a in val_auc],
            val_macro_auc=float(val_auc.mean()),
            seconds=time.perf_counter() - started,
            images_per_second=seen / train_seconds if train_seconds else float("nan"),
            step=best["step"],
            images_seen=best["images_seen"],
        )
        history.append(entry)
        if entry.val_macro_auc > best["auc"]:  # strict: ties keep the earlier round
            best.update(
                epoch=epoch,
                auc=entry.val_macro_auc,
                state=_cpu_state(model),
                bad_epochs=0,
                best_step=entry.step,
            )
        else:
            best["bad_epochs"] += 1
        best["history"] = [asdict(h) for h in history]
        if on_epoch is not None and ctx.is_main:
            on_epoch(entry)
        if checkpoint is not None:  # written by rank 0
            checkpoint.save(
                step=best["step"],
                epoch=epoch,
                modules={"model": model},
                optimizers={"optimizer": optimizer},
                generator=generator,
                run_id=run_id,
                extra=best,
            )

    model.load_state_dict(best["state"])
    model.eval()
    return TrainedClassifier(
        model,
        int(best["epoch"]),
        float(best["auc"]),
        history,
        precision,
        best_step=int(best["best_step"]),
        steps=int(best["step"]),
        images_seen=int(best["images_seen"]),
    )


# ------------------------------------------------------------------------------------------- save / load
