"""One seed of a classifier variant, resumably: train on the variant's training set, score the test split
once with the best-val weights, and keep the finished result on disk (checkpoints/classify/<V>/) so a
rerun skips the seeds that are done."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch

from cxraug.classifier.predict import predict_proba
from cxraug.classifier.train import EpochLog, TrainedClassifier, train_classifier
from cxraug.classifier.variants import Variant, build_training_set
from cxraug.core import distributed
from cxraug.core.checkpoint import Checkpointer
from cxraug.core.config import ClassifyParams
from cxraug.core.runtime import atomic_save, atomic_write_json, safe_load, slug
from cxraug.data.datasets import Split

log = logging.getLogger("cxraug.classify")


@dataclass
class SeedResult:
    seed: int
    test_scores: np.ndarray  # float32 [N_test, K]
    best_epoch: int
    best_val_macro_auc: float
    history: list[dict]
    train_counts: dict[str, int]  # images per class in the training set actually used
    state_dict: dict[str, torch.Tensor] | None = None  # the best-val weights (saved in the model file)


class SeedStore:
    """Finished seeds on disk (checkpoints/classify/<V>/seed<N>.result.pt), so a rerun skips them."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory, self.fingerprint = directory, fingerprint

    def checkpointer(self, seed: int) -> Checkpointer:
        return Checkpointer(self.directory / f"seed{seed}.ckpt.pt", f"{self.fingerprint}-seed{seed}")

    def load(self, seed: int) -> SeedResult | None:
        path = self.directory / f"seed{seed}.result.pt"
        if not path.is_file():
            return None
        saved = safe_load(path)
        if saved.get("fingerprint") != self.fingerprint:
            return None
        return SeedResult(
            seed,
            saved["test_scores"].numpy(),
            saved["best_epoch"],
            saved["best_val_macro_auc"],
            saved["history"],
            saved["train_counts"],
            saved.get("state_dict"),
        )

    def save(self, result: SeedResult) -> None:

        payload = {
            **result.__dict__,
            "test_scores": torch.from_numpy(result.test_scores),
            "fingerprint": self.fingerprint,
        }
        if payload["state_dict"] is None:
            payload.pop("state_dict")
        atomic_save(payload, self.directory / f"seed{result.seed}.result.pt")

    def run_id(self) -> str | None:
        path = self.directory / "run.json"
        if path.is_file():
            info = json.loads(path.read_text())
            if info.get("fingerprint") == self.fingerprint:
                return info["run_id"]
        return None

    def remember_run(self, run_id: str) -> None:
        atomic_write_json(self.directory / "run.json", {"fingerprint": self.fingerprint, "run_id": run_id})

    def clear(self) -> None:
        for path in self.directory.glob("seed*.pt"):
            path.unlink()
        (self.directory / "run.json").unlink(missing_ok=True)
        if not any(self.directory.iterdir()):  # set-aside (stale) checkpoints stay for inspection
            self.directory.rmdir()


def mlflow_epoch_logger(seed: int, classes: tuple[str, ...]):
    def log_epoch(entry: EpochLog) -> None:
        metrics = {
            f"s{seed}/train_loss": entry.train_loss,
            f"s{seed}/val_auc_macro": entry.val_macro_auc,
            f"s{seed}/train_img_per_s": entry.images_per_second,
        }
        metrics.update({f"s{seed}/val_auc/{slug(c)}": a for c, a in zip(classes, entry.val_auc, strict=True)})
        mlflow.log_metrics(metrics, step=entry.epoch)
        log.info(
            "seed %d epoch %d: loss %.4f, val macro AUC %.4f (%.0f img/s)",
            seed,
            entry.epoch,
            entry.train_loss,
            entry.val_macro_auc,
            entry.images_per_second,
        )

    return log_epoch


def train_seed(
    variant: Variant,
    splits: tuple[Split, Split, Split],
    params: ClassifyParams,
    seed: int,
    store: SeedStore,
    run_id: str,
    synthetic: tuple[torch.Tensor, torch.Tensor] | None,
    keep_state: bool,
) -> SeedResult:
    train, val, test = splits
    done = store.load(seed)
    if done is not None and keep_state and done.state_dict is None:
        log.info("seed %d: finished earlier without its weights, which are now kept; training it again", seed)
        done = None
    if done is not None:
        log.info("seed %d: finished earlier (best epoch %d), reusing its test scores", seed, done.best_epoch)
        return done
    training = build_training_set(variant, train, params, seed, synthetic)
    checkpointer = store.checkpointer(seed)
    trained: TrainedClassifier = train_classifier(
        training.images,
        training.labels,
        val,
        params,
        seed,
        class_weights=training.class_weights,
        balanced=training.balanced,
        checkpoint=checkpointer,
        on_epoch=mlflow_epoch_logger(seed, train.classes),
        run_id=run_id,
    )
    # the test split is scored exactly once per seed, with the best-val weights (shared out over ranks)
    ctx = distributed.current()
    scores = predict_proba(trained.model, test.images, trained.precision, params.eval_batch_size, ctx)
    result = SeedResult(
        seed,
        scores,
        trained.best_epoch,
        trained.best_val_macro_auc,
        [h.__dict__ for h in trained.history],
        training.counts(train.classes),
        {k: v.cpu() for k, v in trained.model.state_dict().items()} if keep_state else None,
    )
    if ctx.is_main:
        store.save(result)
    checkpointer.remove()
    ctx.barrier()  # every rank sees this seed finished before looking at the next
    return result
