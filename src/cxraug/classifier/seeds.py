"""One run (replicate) of a classifier variant, resumably: train on the variant's training set, score the
test split once with the best-val weights, and keep the finished result on disk (checkpoints/classify/<V>/)
so a rerun skips the runs that are done.

A run is named by its key: `s<c>` (classifier seed c) for variants without a generator, `g<g>s<c>` for a
GAN variant's classifier seed c on generator replicate g."""

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


def run_key(seed: int, generator_seed: int | None) -> str:
    return f"s{seed}" if generator_seed is None else f"g{generator_seed}s{seed}"


def training_seed(seed: int, generator_seed: int | None) -> int:
    """The seed a run trains with: the classifier seed itself, or for a GAN variant one derived from
    (classifier seed, generator seed), so the runs nested in different generator replicates share no
    classifier randomness (the inference treats generator replicates as independent units)."""
    if generator_seed is None:
        return seed
    return int(np.random.SeedSequence([seed, generator_seed, 0x6A7]).generate_state(1)[0] % 2**31)


@dataclass
class SeedResult:
    seed: int  # the classifier seed (classify.seeds)
    test_scores: np.ndarray  # float32 [N_test, K]
    best_epoch: int  # best val round (an epoch under budget "epochs")
    best_val_macro_auc: float
    history: list[dict]
    train_counts: dict[str, int]  # images per class in the training set actually used
    state_dict: dict[str, torch.Tensor] | None = None  # the best-val weights (saved in the model file)
    key: str = ""  # s<c> or g<g>s<c>
    generator_seed: int | None = None
    best_step: int = 0
    steps: int = 0  # optimizer steps taken
    images_seen: int = 0  # training images (with repeats) those steps used


class SeedStore:
    """Finished seeds on disk (checkpoints/classify/<V>/run-<key>.result.pt), so a rerun skips them."""

    def __init__(self, directory: Path, fingerprint: str) -> None:
        self.directory, self.fingerprint = directory, fingerprint

    def checkpointer(self, key: str) -> Checkpointer:
        return Checkpointer(self.directory / f"run-{key}.ckpt.pt", f"{self.fingerprint}-{key}")

    def load(self, key: str) -> SeedResult | None:
        path = self.directory / f"run-{key}.result.pt"
        if not path.is_file():
            return None
        saved = safe_load(path)
        if saved.pop("fingerprint", None) != self.fingerprint:
            return None
        saved["test_scores"] = saved["test_scores"].numpy()
        saved.setdefault("state_dict", None)
        return SeedResult(**saved)

    def save(self, result: SeedResult) -> None:

        payload = {
            **result.__dict__,
            "test_scores": torch.from_numpy(result.test_scores),
            "fingerprint": self.fingerprint,
        }
        if payload["state_dict"] is None:
            payload.pop("state_dict")
        atomic_save(payload, self.directory / f"run-{result.key}.result.pt")

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
        for path in self.directory.glob("run-*.pt"):
            path.unlink()
        (self.directory / "run.json").unlink(missing_ok=True)
        if not any(self.directory.iterdir()):  # set-aside (stale) checkpoints stay for inspection
            self.directory.rmdir()


def mlflow_epoch_logger(key: str, classes: tuple[str, ...]):
    """Each run's curves under its key (s<c>/..., g<g>s<c>/...), against optimizer steps."""

    def log_epoch(entry: EpochLog) -> None:
        metrics = {
            f"{key}/train_loss": entry.train_loss,
            f"{key}/val_auc_macro": entry.val_macro_auc,
            f"{key}/train_img_per_s": entry.images_per_second,
            f"{key}/images_seen": entry.images_seen,
        }
        metrics.update({f"{key}/val_auc/{slug(c)}": a for c, a in zip(classes, entry.val_auc, strict=True)})
        mlflow.log_metrics(metrics, step=entry.step or entry.epoch)
        log.info(
            "%s round %d (step %d): loss %.4f, val macro AUC %.4f (%.0f img/s)",
            key,
            entry.epoch,
            entry.step,
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
    generator_seed: int | None = None,
) -> SeedResult:
    """Classifier seed `seed` (on generator replicate `generator_seed` for a GAN variant)."""
    train, val, test = splits
    key = run_key(seed, generator_seed)
    done = store.load(key)
    if done is not None and keep_state and done.state_dict is None:
        log.info("%s: finished earlier without its weights, which are now kept; training it again", key)
        done = None
    if done is not None:
        log.info("%s: finished earlier (best round %d), reusing its test scores", key, done.best_epoch)
        return done
    seed_used = training_seed(seed, generator_seed)
    training = build_training_set(variant, train, params, seed_used, synthetic)
    checkpointer = store.checkpointer(key)
    trained: TrainedClassifier = train_classifier(
        training.images,
        training.labels,
        val,
        params,
        seed_used,
        class_weights=training.class_weights,
        balanced=training.balanced,
        checkpoint=checkpointer,
        on_epoch=mlflow_epoch_logger(key, train.classes),
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
        key=key,
        generator_seed=generator_seed,
        best_step=trained.best_step,
        steps=trained.steps,
        images_seen=trained.images_seen,
    )
    if ctx.is_main:
        store.save(result)
    checkpointer.remove()
    ctx.barrier()  # every rank sees this seed finished before looking at the next
    return result
