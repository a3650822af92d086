"""`train_embedder` stage: supervised-contrastive training of the embedder on the real TRAIN split.

Outputs: the frozen embedder (models/embedder.pt) and metrics/train_embedder.json with its val
retrieval quality (k-NN accuracy, recall@1, per-class recall, and the majority-class rate to compare
against). Classes in `exclude_classes` are never trained on; their val images are scored separately as
an open-set retrieval figure.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cxraug.core import distributed
from cxraug.core.checkpoint import Checkpointer
from cxraug.core.config import TrainEmbedderParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import (
    atomic_write_json,
    file_md5,
    pick_device,
    pick_precision,
    progress,
    seed_everything,
    slug,
)
from cxraug.core.stage import NO_HOOKS, Hooks
from cxraug.core.tracking import MetricBuffer, params_hash, stage_run
from cxraug.core.training import StepLog, adam, epoch_batches, steps_per_epoch
from cxraug.data.datasets import Split, load_split
from cxraug.gans.opengan.embedder import Embedder, Retrieval, embed, embedder_step, retrieval, save_embedder

log = logging.getLogger(__name__)
STAGE = "train_embedder"


@dataclass
class EmbedderResult:
    retrieval: Retrieval | None  # None on torchrun ranks > 0
    steps: int
    seconds: float
    images_per_second: float
    resumed_from: int | None
    run_id: str


def excluded_labels(classes: tuple[str, ...], exclude: list[str]) -> list[int]:
    unknown = [c for c in exclude if c not in classes]
    if unknown:
        raise CxraugError(
            f"train_embedder.exclude_classes: {unknown} not among the prepared classes {list(classes)}"
        )
    if len(exclude) > len(classes) - 2:
        raise CxraugError("train_embedder.exclude_classes: at least two classes must remain to train on")
    return [classes.index(c) for c in exclude]


def _seen(split: Split, excluded: list[int]) -> torch.Tensor:
    return ~torch.isin(split.labels, torch.tensor(excluded, dtype=torch.long))


def evaluate(model: Embedder, train: Split, val: Split, excluded: list[int], k: int) -> dict:
    """Val retrieval on the trained classes, and (if any) val images of excluded classes retrieved among
    the train images of ALL classes: does the metric separate classes it never saw?"""
    train_emb, val_emb = embed(model, train.images), embed(model, val.images)
    seen_train, seen_val = _seen(train, excluded), _seen(val, excluded)
    seen = retrieval(
        train_emb[seen_train],
        train.labels[seen_train],
        val_emb[seen_val],
        val.labels[seen_val],
        k,
        train.classes,
    )
    out = {"seen": seen, "train_emb": train_emb, "val_emb": val_emb}
    if excluded and (~seen_val).any():
        out["unseen"] = retrieval(
            train_emb, train.labels, val_emb[~seen_val], val.labels[~seen_val], k, train.classes
        )
    return out


def embedding_figure(val_emb: torch.Tensor, val: Split, excluded: list[int]):
    """PCA of the val embeddings, one colour per class; classes left out of training drawn as crosses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    xy = PCA(n_components=2).fit_transform(val_emb.cpu().numpy())
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(val.classes):
        mask = (val.labels == c).numpy()
        unseen = c in excluded
        ax.scatter(
            *xy[mask].T,
            s=12,
            alpha=0.7,
            marker="x" if unseen else "o",
            label=f"{name} ({mask.sum()})" + (" - not trained on" if unseen else ""),
        )
    ax.set(title="Embedder: val embeddings (PCA)", xlabel="PC 1", ylabel="PC 2")
    ax.legend(fontsize=8, markerscale=1.5)
    fig.tight_layout()
    return fig


def _summary(
    ev: dict,
    params: TrainEmbedderParams,
    steps: int,
    seconds: float,
    images_per_second: float,
    run_id: str,
    precision: str,
) -> dict:
    seen: Retrieval = ev["seen"]
    summary = {
        "val_knn_accuracy": seen.knn_accuracy,
        "val_knn_balanced_accuracy": seen.knn_balanced_accuracy,
        "val_recall_at_1": seen.recall_at_1,
        "val_majority_rate": seen.majority_rate,
        "val_per_class_knn_recall": seen.per_class_recall,
        "knn_k": params.knn_k,
        "excluded_classes": list(params.exclude_classes),
        "steps": steps,
        "seconds": round(seconds, 2),
        "train_images_per_second": round(images_per_second, 1),
        "precision": precision,
        "mlflow_run_id": run_id,
    }
    if "unseen" in ev:
        summary["unseen_val_recall_at_1"] = ev["unseen"].recall_at_1
        summary["unseen_val_knn_recall"] = ev["unseen"].per_class_recall
    return summary


def write_outputs(
    model: Embedder,
    out_path: Path,
    metrics_path: Path,
    summary: dict,
    ev: dict,
    val: Split,
    excluded: list[int],
) -> None:
    """The frozen embedder, the metrics file, and the final figures and metrics in the MLflow run."""
    import mlflow

    trained = [c for i, c in enumerate(val.classes) if i not in excluded]
    save_embedder(model, out_path, val.classes, trained)
    atomic_write_json(metrics_path, summary)
    mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, float)}, step=summary["steps"])
    per_class = {f"val_knn_recall/{slug(c)}": v for c, v in ev["seen"].per_class_recall.items()}
    mlflow.log_metrics(per_class, step=summary["steps"])
    mlflow.log_figure(embedding_figure(ev["val_emb"], val, excluded), "embedding_pca.png")
    mlflow.log_artifact(str(metrics_path))


def train_embedder(
    params: TrainEmbedderParams,
    prepared_dir: Path,
    out_path: Path,
    metrics_path: Path,
    checkpoint_dir: Path = Path("checkpoints") / STAGE,
    hooks: Hooks = NO_HOOKS,
) -> EmbedderResult:
    """Train, evaluate and write the embedder. Under torchrun every rank trains its shard of each global
    batch (the embeddings of all ranks meet in the loss) and rank 0 alone tracks and writes.
    `hooks.on_step` is called after every optimizer step (benchmarks time the loop with it)."""
    ctx = distributed.setup(pick_device(params.device))
    device = distributed.rank_device(pick_device(params.device), ctx)
    distributed.check_batch(params.batch_size, ctx, "train_embedder.batch_size")
    precision = pick_precision(device, params.precision)
    generator = seed_everything(params.seed)
    train, val = load_split(prepared_dir, "train"), load_split(prepared_dir, "val")
    excluded = excluded_labels(train.classes, params.exclude_classes)
    seen = _seen(train, excluded)
    images = train.images[seen] if excluded else train.images  # no copy of a memory-mapped split
    images, labels = images.to(device), train.labels[seen].to(device)  # uint8 on the device

    model = ctx.sync_batchnorm(precision.module(Embedder(train.image_size, params.embed_dim, params.d_base)))
    optimizer = adam(model.parameters(), device, params.lr, weight_decay=params.weight_decay, decoupled=True)
    modules, optimizers = {"embedder": model}, {"adamw": optimizer}
    per_epoch = steps_per_epoch(len(labels), params.batch_size, params.steps_per_epoch)
    total = per_epoch * params.epochs
    inputs = [prepared_dir / "train.npz", prepared_dir / "val.npz"]
    checkpoints = Checkpointer(
        checkpoint_dir / "state.pt", params_hash(params) + "-" + "-".join(file_md5(p) for p in inputs)
    )
    resumed = checkpoints.restore(modules, optimizers, generator)
    step = resumed.step if resumed else 0
    if resumed and ctx.is_main:
        log.info("resuming %s from checkpoint: step %d of %d", STAGE, step, total)
    ctx.decorrelate(params.seed)
    trained = ctx.wrap(model)  # DDP for the training passes; evaluation uses `model`

    tags = {"precision": precision.describe(), "processes": str(ctx.world_size)}
    resume_run_id = resumed.run_id if resumed else None
    run = stage_run(
        experiment="embedder",
        stage=STAGE,
        params=params,
        inputs=inputs,
        resume_run_id=resume_run_id,
        extra_tags=tags,
    )
    with ctx.main_only(run) as run_id:
        metrics = MetricBuffer() if ctx.is_main else None
        steps = StepLog(ctx, metrics)
        bar = progress(total=total, initial=step, desc="embedder", unit="step")
        start, start_step = time.perf_counter(), step
        model.train()
        for epoch in range(step // per_epoch, params.epochs):
            batches = epoch_batches(labels, params.batch_size, per_epoch, params.balanced, params.seed, epoch)
            for idx in batches[step - epoch * per_epoch :]:  # a resumed epoch skips the batches it has done
                idx = idx.to(device)
                loss = embedder_step(
                    trained,
                    optimizer,
                    images[idx],
                    labels[idx],
                    params.temperature,
                    params.augment,
                    generator,
                    precision,
                    ctx,
                )
                step += 1
                steps.add({"loss": loss}, step)
                bar.update()
                if steps.last:
                    bar.set_postfix(loss=f"{steps.last['loss']:.3f}", epoch=epoch + 1, refresh=False)
                if step % params.checkpoint_every == 0 and step < total:
                    steps.flush()  # what is logged matches what a resumed run starts from
                    checkpoints.save(  # rank 0 writes
                        step=step,
                        epoch=epoch,
                        modules=modules,
                        optimizers=optimizers,
                        generator=generator,
                        run_id=run_id,
                    )
                if hooks.on_step is not None:
                    hooks.on_step("embedder", step, modules)
            steps.flush()
            if ctx.is_main:
                ev = evaluate(model, train, val, excluded, params.knn_k)
                metrics.log({**ev["seen"].as_metrics(), "epoch": epoch + 1}, step)
                metrics.flush()
        bar.close()
        seconds = time.perf_counter() - start
        ips = (step - start_step) * params.batch_size / seconds if step > start_step else float("nan")
        if ctx.is_main:
            summary = _summary(ev, params, step, seconds, ips, run_id, precision.describe())
            write_outputs(model, out_path, metrics_path, summary, ev, val, excluded)
        checkpoints.remove()
    ctx.barrier()  # the outputs exist before any rank returns
    retrieval = ev["seen"] if ctx.is_main else None
    return EmbedderResult(retrieval, step, seconds, ips, resumed.step if resumed else None, run_id)
