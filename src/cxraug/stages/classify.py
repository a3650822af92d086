"""`classify` stage: one variant = build its training set, train a VGG16 per seed, evaluate on test once.

Variants (n in synthesize.n_per_class):
  baseline           the real training split as is
  weighted_loss      cross-entropy weighted by inverse class frequency
  oversample         every epoch draws class-balanced batches (datasets.balanced_indices)
  standard_aug_<n>   + n classic-transform copies of real TRAIN images per class (data/augment.py)
  bagan_<n>          + the first n accepted synthetic images per class from data/synthetic/bagan
  opengan_<n>        + the same from data/synthetic/opengan
Only the TRAINING set differs between variants: validation (early stopping) and test (reported once per
seed, with the best-val checkpoint) are the real prepared splits, loaded by `evaluation_splits` for every
variant; their md5s are written into the metrics file so any two variants can be checked to share them.

Outputs: models/classifier/<V>.pt (best checkpoint of the FIRST seed in classify.seeds),
data/scores/<V>.npz (test softmax of every seed), metrics/classify/<V>.json, plots/roc/<V>.csv.
Per-seed progress lives in checkpoints/classify/<V>/ (epoch checkpoints, finished seeds), so a stopped
stage resumes where it was, in the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cxraug.core import distributed
from cxraug.core.checkpoint import Checkpointer
from cxraug.classifier.train import (
    EpochLog,
    TrainedClassifier,
    inverse_frequency_weights,
    load_classifier,
    predict_proba,
    save_classifier,
    train_classifier,
)
from cxraug.core.config import ClassifyParams, Params
from cxraug.data.augment import augmented_copies
from cxraug.data.datasets import Split, load_split
from cxraug.core.errors import CxraugError
from cxraug.metrics.auc import bootstrap_ci, per_class_auc
from cxraug.core.runtime import (
    atomic_savez,
    atomic_write,
    atomic_write_json,
    file_md5,
    pick_device,
    safe_load,
    slug,
)

__all__ = ["load_classifier", "train_classifier", "run_classify", "parse_variant", "valid_variants"]

log = logging.getLogger(__name__)
REBALANCING = ("baseline", "weighted_loss", "oversample")
ADDITIVE = ("standard_aug", "bagan", "opengan")
GANS = ("bagan", "opengan")


# ------------------------------------------------------------------------------------------------ variants


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # one of REBALANCING + ADDITIVE
    n: int = 0  # extra images per class

    @property
    def gan(self) -> str | None:
        return self.kind if self.kind in GANS else None


def valid_variants(n_per_class: list[int]) -> list[str]:
    return [*REBALANCING, *(f"{kind}_{n}" for kind in ADDITIVE for n in n_per_class)]


def parse_variant(name: str, n_per_class: list[int]) -> Variant:
    """'bagan_1000' -> Variant('bagan_1000', 'bagan', 1000); anything not allowed is a one-line error."""
    if name in REBALANCING:
        return Variant(name, name)
    match = re.fullmatch(r"({})_(\d+)".format("|".join(ADDITIVE)), name)
    if match and int(match[2]) in n_per_class:
        return Variant(name, match[1], int(match[2]))
    raise CxraugError(
        f"unknown variant '{name}'; valid: {', '.join(valid_variants(n_per_class))} "
        "(n comes from synthesize.n_per_class)"
    )


# ------------------------------------------------------------------------------------------ training set


@dataclass(frozen=True)
class TrainingSet:
    images: torch.Tensor  # uint8 [N, H, W]: real train first, then the extra images
    labels: torch.Tensor
    n_real: int  # images[:n_real] is the real training split
    class_weights: torch.Tensor | None = None
    balanced: bool = False

    def counts(self, classes: tuple[str, ...]) -> dict[str, int]:
        return dict(zip(classes, torch.bincount(self.labels, minlength=len(classes)).tolist(), strict=True))


def _augment_generator(seed: int) -> torch.Generator:
    """A stream of its own (not the training generator's), so the extra images depend only on the seed."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 0xA06]).generate_state(1)[0]))


def _check_synthetic(directory: Path, images: torch.Tensor, train: Split) -> None:
    import pandas as pd

    pairs = pd.read_csv(directory / "index.csv")[["class", "label"]].drop_duplicates()
    mismatched = [
        (c, lab)
        for c, lab in pairs.itertuples(index=False)
        if not (0 <= lab < train.n_classes and train.classes[lab] == c)
    ]
    if mismatched:
        raise CxraugError(
            f"{directory}/index.csv: classes {mismatched} do not match the prepared classes "
            f"{list(train.classes)}; rerun synthesize after prepare"
        )
    if len(images) and images.shape[1:] != train.images.shape[1:]:
        raise CxraugError(
            f"{directory}: synthetic images are {tuple(images.shape[1:])}, prepared ones "
            f"{tuple(train.images.shape[1:])}; rerun synthesize after prepare"
        )


def load_extra_synthetic(
    variant: Variant, train: Split, synthetic_root: Path
) -> tuple[torch.Tensor, torch.Tensor]:
    """A GAN variant's synthetic images (first n per class), decoded once when the stage starts."""
    from cxraug.synthesis.draw import load_synthetic

    directory = Path(synthetic_root) / variant.kind
    images, labels = load_synthetic(directory, variant.n)
    _check_synthetic(directory, images, train)
    counts = torch.bincount(labels, minlength=train.n_classes).tolist()
    short = [f"{c} ({k})" for c, k in zip(train.classes, counts, strict=True) if k != variant.n]
    if short:
        raise CxraugError(
            f"{directory}: {variant.name} needs {variant.n} synthetic images of every class, got "
            f"{', '.join(short)}; rerun synthesize@{variant.kind}"
        )
    return images, labels


def build_training_set(
    variant: Variant,
    train: Split,
    params: ClassifyParams,
    seed: int,
    synthetic: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainingSet:
    """The real training split plus whatever the variant adds, made from TRAIN images (standard_aug) or
    the given synthetic images (GAN variants, from `load_extra_synthetic`); nothing else can enter."""
    if variant.kind == "weighted_loss":
        weights = inverse_frequency_weights(train.labels, train.n_classes)
        return TrainingSet(train.images, train.labels, len(train), class_weights=weights)
    if variant.kind == "oversample":
        return TrainingSet(train.images, train.labels, len(train), balanced=True)
    if variant.kind == "baseline":
        return TrainingSet(train.images, train.labels, len(train))
    if variant.kind == "standard_aug":
        extra, extra_labels = augmented_copies(
            train.images, train.labels, variant.n, params.augment, _augment_generator(seed), train.n_classes
        )
    elif synthetic is None:
        raise ValueError(f"variant {variant.name} needs its synthetic images (load_extra_synthetic)")
    else:
        extra, extra_labels = synthetic
    return TrainingSet(torch.cat([train.images, extra]), torch.cat([train.labels, extra_labels]), len(train))


# ------------------------------------------------------------------------------------------ evaluation sets


def split_md5(split: Split) -> str:
    """md5 of a split's pixels and labels: equal md5 = the very same evaluation images."""
    digest = hashlib.md5(split.images.contiguous().numpy().tobytes())
    digest.update(split.labels.numpy().tobytes())
    return digest.hexdigest()


def evaluation_splits(prepared: Path) -> tuple[Split, Split, Split]:
    """train, val, test from prepare's output: the ONE place every variant's val and test come from."""
    train, val, test = (load_split(prepared, name) for name in ("train", "val", "test"))
    for name, split in (("val", val), ("test", test)):
        if split.classes != train.classes or split.images.shape[1:] != train.images.shape[1:]:
            raise CxraugError(
                f"{prepared}/{name}.npz does not match train.npz (classes or size); rerun prepare"
            )
    return train, val, test


# --------------------------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class Paths:
    """Where the stage reads and writes, relative to the project root (DVC runs it there)."""

    prepared: Path = Path("data/prepared")
    synthetic: Path = Path("data/synthetic")
    synthesize_metrics: Path = Path("metrics/synthesize")
    models: Path = Path("models/classifier")
    scores: Path = Path("data/scores")
    metrics: Path = Path("metrics/classify")
    roc: Path = Path("plots/roc")
    checkpoints: Path = Path("checkpoints/classify")

    def under(self, root: Path) -> Paths:
        return Paths(**{k: root / v for k, v in self.__dict__.items()})


@dataclass
class SeedResult:
    seed: int
    test_scores: np.ndarray  # float32 [N_test, K]
    best_epoch: int
    best_val_macro_auc: float
    history: list[dict]
    train_counts: dict[str, int]  # images per class in the training set actually used
    state_dict: dict[str, torch.Tensor] | None = None  # kept for the first seed (the saved model)


@dataclass
class ClassifyResult:
    variant: str
    metrics: dict
    run_id: str
    seconds: float
    outputs: list[Path] = field(default_factory=list)


def _fingerprint(variant: Variant, params: ClassifyParams, inputs: list[Path]) -> str:
    payload = json.dumps(
        {
            "variant": variant.name,
            "params": params.model_dump(mode="json"),
            "inputs": {str(p): file_md5(p) for p in inputs if p.is_file()},
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _gan_tags(variant: Variant, paths: Paths) -> dict[str, str]:
    """Link a GAN variant's run to the synthesize run and the exact synthetic data that fed it."""
    if variant.gan is None:
        return {"variant": variant.name}
    tags = {"variant": variant.name, "synthetic.gan": variant.gan, "synthetic.n_per_class": str(variant.n)}
    index = paths.synthetic / variant.gan / "index.csv"
    if index.is_file():
        tags["synthetic.index_md5"] = file_md5(index)
    synth_metrics = paths.synthesize_metrics / f"{variant.gan}.json"
    if synth_metrics.is_file():
        try:
            info = json.loads(synth_metrics.read_text())
        except json.JSONDecodeError:
            info = {}
        for key in ("mlflow_run_id", "gan_run_id"):
            if info.get(key):
                tags[f"synthetic.{key.removeprefix('mlflow_')}"] = str(info[key])
    return tags


class _SeedStore:
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
        from cxraug.core.runtime import atomic_save

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


def _mlflow_epoch_logger(seed: int, classes: tuple[str, ...]):
    import mlflow

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


def _train_seed(
    variant: Variant,
    splits: tuple[Split, Split, Split],
    params: ClassifyParams,
    seed: int,
    store: _SeedStore,
    run_id: str,
    synthetic: tuple[torch.Tensor, torch.Tensor] | None,
    keep_state: bool,
) -> SeedResult:
    train, val, test = splits
    done = store.load(seed)
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
        on_epoch=_mlflow_epoch_logger(seed, train.classes),
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


def run_classify(variant_name: str, params: Params, paths: Paths = Paths()) -> ClassifyResult:
    """Train and evaluate one variant for every seed; write its four outputs and one MLflow run."""
    from cxraug.core.tracking import stage_run

    started = time.perf_counter()
    settings = params.classify
    variant = parse_variant(variant_name, params.synthesize.n_per_class)
    train, val, test = evaluation_splits(paths.prepared)
    inputs = [paths.prepared / f"{s}.npz" for s in ("train", "val", "test")]
    if variant.gan:
        inputs.append(paths.synthetic / variant.gan / "index.csv")
        if not inputs[-1].is_file():
            raise CxraugError(f"{inputs[-1]}: not found; run `dvc repro synthesize@{variant.gan}` first")
    store = _SeedStore(paths.checkpoints / variant.name, _fingerprint(variant, settings, inputs))
    ctx = distributed.setup(pick_device(settings.device))
    with ctx.main_first():  # rank 0 alone tracks, writes and clears; the others train their shards
        store.directory.mkdir(parents=True, exist_ok=True)
        resume_run_id = store.run_id()

    run = stage_run(
        experiment="classify",
        stage=f"classify@{variant.name}",
        params=settings,
        inputs=inputs,
        run_name=variant.name,
        resume_run_id=resume_run_id,
        extra_tags=_gan_tags(variant, paths),
    )
    metrics, outputs = {}, []
    with ctx.main_only(run) as run_id:
        if ctx.is_main:
            store.remember_run(run_id)
        synthetic = load_extra_synthetic(variant, train, paths.synthetic) if variant.gan else None
        seeds = [
            _train_seed(
                variant, (train, val, test), settings, seed, store, run_id, synthetic, keep_state=i == 0
            )
            for i, seed in enumerate(settings.seeds)
        ]
        if ctx.is_main:
            metrics = summarise(variant, settings, seeds, test, run_id)
            metrics["eval_sets"] = {"val": split_md5(val), "test": split_md5(test)}
            outputs = write_outputs(variant, train.classes, settings, seeds, test, metrics, paths)
            log_run(variant, seeds, test, metrics, outputs[0])
    ctx.barrier()
    if ctx.is_main:
        store.clear()
    return ClassifyResult(variant.name, metrics, run_id, time.perf_counter() - started, outputs)


# ------------------------------------------------------------------------------------------------ outputs


def summarise(
    variant: Variant, settings: ClassifyParams, seeds: list[SeedResult], test: Split, run_id: str
) -> dict:
    """The metrics file: seed means, std over seeds and patient-bootstrap CIs of the test AUCs."""
    classes = list(test.classes)
    scores = np.stack([s.test_scores for s in seeds])
    ci = bootstrap_ci(scores, test.labels.numpy(), test.patient_ids, settings.bootstrap, settings.ci_level)
    per_seed = {str(s.seed): per_class_auc(s.test_scores, test.labels.numpy()) for s in seeds}
    return {
        "variant": variant.name,
        "classes": classes,
        "seeds": [s.seed for s in seeds],
        "per_class_auc": dict(zip(classes, ci.estimate.round(5).tolist(), strict=True)),
        "per_class_auc_std": dict(zip(classes, ci.std_over_seeds.round(5).tolist(), strict=True)),
        "per_class_auc_ci": {
            c: [round(float(lo), 5), round(float(hi), 5)]
            for c, lo, hi in zip(classes, ci.lo, ci.hi, strict=True)
        },
        "macro_auc": round(ci.macro, 5),
        "macro_auc_std": round(ci.macro_std_over_seeds, 5),
        "macro_auc_ci": [round(ci.macro_lo, 5), round(ci.macro_hi, 5)],
        "per_seed_auc": {
            seed: dict(zip(classes, auc.round(5).tolist(), strict=True)) for seed, auc in per_seed.items()
        },
        "best_epoch": {str(s.seed): s.best_epoch for s in seeds},
        "best_val_macro_auc": {str(s.seed): round(s.best_val_macro_auc, 5) for s in seeds},
        "train_images": seeds[0].train_counts,
        "extra_images_per_class": variant.n,
        "test_images": len(test),
        "test_patients": int(len(np.unique(test.patient_ids))),
        "bootstrap": {
            "resamples": ci.n_boot,
            "level": settings.ci_level,
            "unit": "patient",
            "undefined_resamples": ci.undefined_resamples,
        },
        "mlflow_run_id": run_id,
    }


def write_outputs(
    variant: Variant,
    classes: tuple[str, ...],
    settings: ClassifyParams,
    seeds: list[SeedResult],
    test: Split,
    metrics: dict,
    paths: Paths,
) -> list[Path]:
    from cxraug.metrics.figures import roc_points
    from cxraug.nets.vgg import VGG16

    first = seeds[0]
    model = VGG16(
        len(classes),
        image_size=test.image_size,
        width=settings.width,
        head=settings.head,
        norm=settings.norm,
        dropout=settings.dropout,
    )
    model.load_state_dict(first.state_dict)
    model_path = save_classifier(
        model,
        paths.models / f"{variant.name}.pt",
        classes,
        variant=variant.name,
        seed=first.seed,
        best_epoch=first.best_epoch,
    )
    scores = np.stack([s.test_scores for s in seeds]).astype(np.float32)
    scores_path = atomic_savez(
        paths.scores / f"{variant.name}.npz",
        scores=scores,
        labels=test.labels.numpy().astype(np.int64),
        patient_ids=np.asarray(test.patient_ids).astype(str),
        seeds=np.asarray([s.seed for s in seeds], dtype=np.int64),
        classes=np.asarray(classes, dtype=str),
        image_index=np.asarray(test.image_index).astype(str),
    )
    roc = roc_points(scores.mean(0), test.labels.numpy(), classes)
    roc_path = atomic_write(paths.roc / f"{variant.name}.csv", lambda tmp: roc.to_csv(tmp, index=False))
    metrics_path = atomic_write_json(paths.metrics / f"{variant.name}.json", metrics)
    return [model_path, scores_path, metrics_path, roc_path]


def log_run(variant: Variant, seeds: list[SeedResult], test: Split, metrics: dict, model_path: Path) -> None:
    """Final test metrics, ROC and confusion figures and the saved model: what MLflow shows of a variant."""
    import matplotlib.pyplot as plt
    import mlflow

    from cxraug.metrics.figures import confusion_figure, roc_figure, roc_points

    final = {
        "test_auc_macro": metrics["macro_auc"],
        "test_auc_macro_ci_lo": metrics["macro_auc_ci"][0],
        "test_auc_macro_ci_hi": metrics["macro_auc_ci"][1],
        "test_auc_macro_std": metrics["macro_auc_std"],
    }
    for c, auc in metrics["per_class_auc"].items():
        lo, hi = metrics["per_class_auc_ci"][c]
        final.update(
            {f"test_auc/{slug(c)}": auc, f"test_auc_ci_lo/{slug(c)}": lo, f"test_auc_ci_hi/{slug(c)}": hi}
        )
    for s in seeds:
        final[f"s{s.seed}/best_epoch"] = s.best_epoch
        final[f"s{s.seed}/test_auc_macro"] = float(
            np.mean(list(metrics["per_seed_auc"][str(s.seed)].values()))
        )
    mlflow.log_metrics(final)
    scores = np.stack([s.test_scores for s in seeds]).mean(0)
    roc = roc_points(scores, test.labels.numpy(), test.classes)
    title = f"{variant.name}: test, mean of {len(seeds)} seed(s)"
    for fig, name in (
        (roc_figure(roc, metrics["per_class_auc"], title), "roc.png"),
        (confusion_figure(scores, test.labels.numpy(), test.classes, title), "confusion.png"),
    ):
        mlflow.log_figure(fig, f"figures/{name}")
        plt.close(fig)
    mlflow.log_dict(metrics, "metrics.json")
    mlflow.log_artifact(str(model_path), artifact_path="model")
