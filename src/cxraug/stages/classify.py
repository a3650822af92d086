"""`classify_*` stages: one variant = build its training set, train a VGG16 per seed, evaluate on test once.

The variants are listed in classifier/variants.py. Only the TRAINING set differs between variants:
validation (early stopping) and test (reported once per seed, with the best-val checkpoint) are the real
prepared splits, loaded by `evaluation_splits` for every variant; their md5s are written into the metrics
file so any two variants can be checked to share them.

Replicates: a variant without a generator trains one run per classifier seed (classify.seeds); a GAN
variant trains every classifier seed on every generator replicate (replicates.generator_seeds, a full
cross: R_g x R_c runs, keys g<g>s<c>), so both the generator's and the classifier's randomness are
sampled and the two can be told apart. All runs of a variant live in ONE MLflow run (the variant's), each
replicate's curves and final figures under its key (g0s1/val_auc_macro, ...): a parent/child tree would
add nothing a key prefix does not show, and would complicate resuming the stage in the same run.

Outputs: models/classifier/<V>.pt (best checkpoint of every run; `load_classifier` gives the FIRST),
data/scores/<V>.npz (test softmax of every run, with its key and generator seed), metrics/classify/<V>.json
(two-level intervals, metrics/inference.py; per run: AUCs, steps, best step, images seen), plots/roc/<V>.csv.
Per-run progress lives in checkpoints/classify/<V>/ (round checkpoints, finished runs), so a stopped
stage resumes where it was, in the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from cxraug.classifier.predict import save_classifier
from cxraug.classifier.seeds import SeedResult, SeedStore, train_seed
from cxraug.classifier.summary import summarize
from cxraug.classifier.variants import Variant, parse_variant
from cxraug.core import distributed, layout
from cxraug.core.config import ClassifyParams, Params
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import (
    atomic_savez,
    atomic_write,
    atomic_write_json,
    file_md5,
    pick_device,
    slug,
)
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult
from cxraug.core.tracking import stage_run
from cxraug.core.training import fingerprint
from cxraug.data.datasets import Split, load_split
from cxraug.gans import registry
from cxraug.metrics.figures import confusion_figure, roc_figure, roc_points
from cxraug.nets.vgg import VGG16
from cxraug.synthesis.files import load_synthetic

log = logging.getLogger(__name__)


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
    variant: Variant, train: Split, synthetic_root: Path, generator_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A GAN variant's synthetic images (first n per class) of one generator replicate. A filter-sensitivity
    variant takes what its filter passed when a class fell short (down to none: that class then gets no
    extra images), logged here and counted in its metrics (`synthetic_images`)."""

    directory = Path(synthetic_root) / variant.source / layout.replicate(generator_seed)
    sensitivity = variant.filter is not None
    images, labels = load_synthetic(directory, variant.n, at_most=sensitivity)
    if not len(images):
        images = torch.zeros((0, *train.images.shape[1:]), dtype=torch.uint8)
    _check_synthetic(directory, images, train)
    counts = torch.bincount(labels, minlength=train.n_classes).tolist()
    short = [f"{c} ({k})" for c, k in zip(train.classes, counts, strict=True) if k != variant.n]
    if short and sensitivity:
        log.warning(
            "%s: filter %s fell short of %d per class: %s; training on the images that passed",
            directory,
            variant.filter,
            variant.n,
            ", ".join(short),
        )
    elif short:
        raise CxraugError(
            f"{directory}: {variant.name} needs {variant.n} synthetic images of every class, got "
            f"{', '.join(short)}; rerun synthesize@{variant.kind}-{generator_seed}"
        )
    return images, labels


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

    variant: str = "baseline"  # which classify_* stage instance
    prepared: Path = layout.PREPARED
    synthetic: Path = layout.SYNTHETIC
    synthesize_metrics: Path = layout.SYNTHESIZE_METRICS
    models: Path = layout.CLASSIFIERS
    scores: Path = layout.SCORES
    metrics: Path = layout.CLASSIFY_METRICS
    roc: Path = layout.ROC_PLOTS
    checkpoints: Path = layout.checkpoints("classify")

    def under(self, root: Path) -> Paths:
        """The same layout below `root`."""
        moved = {k: root / v for k, v in self.__dict__.items() if isinstance(v, Path)}
        return replace(self, **moved)


def _gan_tags(variant: Variant, paths: Paths, generator_seeds: list[int]) -> dict[str, str]:
    """Link a GAN variant's run to each replicate's synthesize run and the exact synthetic data that fed it
    (tags synthetic.seed<k>.index_md5, .run_id, .gan_run_id)."""
    if variant.gan is None:
        return {"variant": variant.name}
    tags = {"variant": variant.name, "synthetic.gan": variant.gan, "synthetic.n_per_class": str(variant.n)}
    if variant.filter is not None:
        tags["synthetic.filter"] = variant.filter
    tags["generator_seeds"] = ",".join(map(str, generator_seeds))
    for g in generator_seeds:
        name = layout.replicate(g)
        index = paths.synthetic / variant.source / name / "index.csv"
        if index.is_file():
            tags[f"synthetic.{name}.index_md5"] = file_md5(index)
        synth_metrics = paths.synthesize_metrics / variant.source / f"{name}.json"
        if synth_metrics.is_file():
            try:
                info = json.loads(synth_metrics.read_text())
            except json.JSONDecodeError:
                info = {}
            for key in ("mlflow_run_id", "gan_run_id"):
                if info.get(key):
                    tags[f"synthetic.{name}.{key.removeprefix('mlflow_')}"] = str(info[key])
    return tags


def run(params: Params, paths: Paths, hooks: Hooks = NO_HOOKS) -> StageResult:
    """Train and evaluate one variant for every seed; write its four outputs and one MLflow run."""
    started = time.perf_counter()
    settings = params.classify
    variant = parse_variant(
        paths.variant, params.synthesize.n_per_class, registry.names(), params.filter_sensitivity
    )
    train, val, test = evaluation_splits(paths.prepared)
    inputs = [paths.prepared / f"{s}.npz" for s in ("train", "val", "test")]
    generator_seeds = list(params.replicates.generator_seeds) if variant.gan else [None]
    for g in generator_seeds if variant.gan else ():
        inputs.append(paths.synthetic / variant.source / layout.replicate(g) / "index.csv")
        if not inputs[-1].is_file():
            producer = (
                f"synthesize_filter@{variant.filter}" if variant.filter else f"synthesize@{variant.gan}"
            )
            raise CxraugError(f"{inputs[-1]}: not found; run `dvc repro {producer}-{g}` first")
    store = SeedStore(paths.checkpoints / variant.name, f"{variant.name}:{fingerprint(settings, inputs)}")
    ctx = distributed.setup(pick_device(settings.device))
    with ctx.main_first():  # rank 0 alone tracks, writes and clears; the others train their shards
        store.directory.mkdir(parents=True, exist_ok=True)
        resume_run_id = store.run_id()

    run = stage_run(
        experiment="classify",
        stage=stage_name(variant),
        params=settings,
        inputs=inputs,
        run_name=variant.name,
        resume_run_id=resume_run_id,
        extra_tags=_gan_tags(variant, paths, generator_seeds if variant.gan else []),
    )
    metrics, outputs = {}, []
    with ctx.main_only(run) as run_id:
        if ctx.is_main:
            store.remember_run(run_id)
        seeds, used = [], {}
        for g in generator_seeds:  # a full cross: every classifier seed on every generator replicate
            synthetic = load_extra_synthetic(variant, train, paths.synthetic, g) if variant.gan else None
            if synthetic is not None:
                counts = torch.bincount(synthetic[1], minlength=train.n_classes).tolist()
                used[layout.replicate(g)] = dict(zip(train.classes, counts, strict=True))
            seeds += [
                train_seed(
                    variant,
                    (train, val, test),
                    settings,
                    seed,
                    store,
                    run_id,
                    synthetic,
                    keep_state=True,  # every run's weights go in the model file (external-test scores them)
                    generator_seed=g,
                )
                for seed in settings.seeds
            ]
        if ctx.is_main:
            metrics = summarize(variant, settings, seeds, test, run_id)
            metrics["eval_sets"] = {"val": split_md5(val), "test": split_md5(test)}
            if used:  # synthetic images per class each generator replicate's runs trained on
                metrics["synthetic_images"] = used
            outputs = write_outputs(variant, train.classes, settings, seeds, test, metrics, paths)
            log_run(variant, seeds, test, metrics, outputs[0])
    ctx.barrier()
    if ctx.is_main:
        store.clear()
    seconds = time.perf_counter() - started
    return StageResult(
        stage_name(variant), _summary(variant, metrics, seconds), tuple(outputs), run_id, metrics
    )


def stage_name(variant: Variant) -> str:
    """The DVC stage that trains `variant` (dvc.yaml's classify_real / classify_aug / classify_gan)."""
    if variant.filter is not None:
        return f"classify_filter@{variant.filter}"
    if variant.gan is not None:
        return f"classify_gan@{variant.gan}-{variant.n}"
    if variant.n:
        return f"classify_aug@{variant.n}"
    return f"classify_real@{variant.name}"


def _summary(variant: Variant, m: dict, seconds: float) -> str:
    if not m:  # torchrun ranks > 0 report nothing
        return ""
    per_class = ", ".join(f"{c} {a:.3f}" for c, a in m["per_class_auc"].items())
    return (
        f"{variant.name}: test macro AUC {m['macro_auc']:.3f} "
        f"[{m['macro_auc_ci'][0]:.3f}, {m['macro_auc_ci'][1]:.3f}] (two-level) over {len(m['runs'])} runs "
        f"(best steps {[r['best_step'] for r in m['per_run'].values()]}) in {seconds:.0f}s; {per_class}"
    )


# ------------------------------------------------------------------------------------------------ outputs


def write_outputs(
    variant: Variant,
    classes: tuple[str, ...],
    settings: ClassifyParams,
    seeds: list[SeedResult],
    test: Split,
    metrics: dict,
    paths: Paths,
) -> list[Path]:

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
        more_seeds=[(s.seed, s.state_dict) for s in seeds[1:]],  # every run: external-test scores them all
        runs=[(s.key, s.generator_seed) for s in seeds],
        variant=variant.name,
        seed=first.seed,
        best_epoch=first.best_epoch,
    )
    scores = np.stack([s.test_scores for s in seeds]).astype(np.float32)
    scores_path = atomic_savez(
        paths.scores / f"{variant.name}.npz",
        scores=scores,
        runs=np.asarray([s.key for s in seeds], dtype=str),
        generator_seeds=np.asarray([-1 if s.generator_seed is None else s.generator_seed for s in seeds]),
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
    for s in seeds:  # each replicate under its key (s<c> or g<g>s<c>)
        final[f"{s.key}/best_round"] = s.best_epoch
        final[f"{s.key}/best_step"] = s.best_step
        final[f"{s.key}/steps"] = s.steps
        final[f"{s.key}/images_seen"] = s.images_seen
        final[f"{s.key}/test_auc_macro"] = float(np.mean(list(metrics["per_run_auc"][s.key].values())))
    mlflow.log_metrics(final)
    scores = np.stack([s.test_scores for s in seeds]).mean(0)
    roc = roc_points(scores, test.labels.numpy(), test.classes)
    title = (
        f"{variant.name} ({metrics['network']}), test: run-mean scores of {len(seeds)} run(s); "
        "AUC: mean of the runs' AUCs"
    )
    for fig, name in (
        (roc_figure(roc, metrics["per_class_auc"], title), "roc.png"),
        (confusion_figure(scores, test.labels.numpy(), test.classes, title), "confusion.png"),
    ):
        mlflow.log_figure(fig, f"figures/{name}")
        plt.close(fig)
    mlflow.log_dict(metrics, "metrics.json")
    mlflow.log_artifact(str(model_path), artifact_path="model")
