"""`gan_metrics@<gan>-<k>` stage: is replicate k of the GAN good, and does it copy its training images?
Against the REAL TRAINING split (what the GAN learnt from), for the images of synthesize@<gan>-<k>:

1. Fidelity (metrics/fidelity.py, computed by torch-fidelity): Fréchet distance, KID, precision and
   recall, in every feature space of `gan_metrics.extractors` (+ Inception-v3 when its weights are given),
   for the whole set and per class. Keys name the space: `fd_embedder`, `kid_classifier`,
   `precision_embedder`, `fid_inception`, ... "overall" compares the synthetic images at the REAL split's
   class mix (the first accepted images of each class, as many as keep the real proportions): the
   synthetic set is balanced on purpose, and a class-mix difference would otherwise dominate the figure.
   A comparison with too few images for a metric is skipped, counted and listed, never an error.
2. Classification accuracy score (classifier/cas.py): a classifier trained on the synthetic images only,
   tested on the real test split; beside it the real-data baseline and a paired patient bootstrap of the
   difference when classify_real@baseline has run.
3. Memorisation audit (metrics/memorisation.py): every synthetic image's nearest real training image in
   pixels and in the first extractor's feature space; the share closer than the copy threshold.

Writes metrics/gan/<gan>.json and one MLflow run (experiment `gan_metrics`): the figures as metrics, the
distance histograms and the closest synthetic/real pairs.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxraug.classifier import cas
from cxraug.classifier.predict import load_classifier
from cxraug.core import layout, tracking
from cxraug.core.config import ClassifyParams, GanMetricsParams, Params
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_write_json, file_md5, pick_device, progress, slug
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult
from cxraug.core.tracking import stage_run
from cxraug.data.datasets import Split, load_split
from cxraug.gans import registry
from cxraug.gans.opengan.embedder import load_embedder
from cxraug.metrics import fidelity, memorisation
from cxraug.synthesis.files import read_index, read_png

log = logging.getLogger(__name__)
FIDELITY_METRICS = ("fd", "kid", "precision", "recall")


# the two feature spaces of our own nets (metrics/fidelity.py loads no model itself)
fidelity.define("embedder", lambda path: load_embedder(path, "cpu"))
fidelity.define("classifier", lambda path: fidelity.Penultimate(load_classifier(path, "cpu")))


@dataclass(frozen=True)
class Paths:
    gan: str = "bagan"  # which gan_metrics@<gan> stage instance
    prepared: Path = layout.PREPARED
    synthetic: Path = layout.SYNTHETIC  # <synthetic>/<gan>/index.csv
    embedder: Path = layout.EMBEDDER
    classifier: Path = layout.CLASSIFIERS / "baseline.pt"
    baseline_metrics: Path = layout.CLASSIFY_METRICS / "baseline.json"
    baseline_scores: Path = layout.SCORES / "baseline.npz"
    synthesize_metrics: Path = layout.SYNTHESIZE_METRICS  # <...>/<gan>/seed<k>.json (its MLflow run id)
    out: Path = layout.GAN_METRICS  # <out>/<gan>/seed<k>.json
    generator_seed: int = 0  # which replicate: <synthetic>/<gan>/seed<k>


# ----------------------------------------------------------------------------------------------- inputs


def load_evaluated_synthetic(
    directory: Path, classes: tuple[str, ...], per_class: int | None, image_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `per_class` accepted images of each class (all of them when None) as uint8 [N, H, W] and
    labels, class by class. Unlike `load_synthetic`, a class short of `per_class` gives what it has."""

    index = read_index(directory)
    pairs = index[["class", "label"]].drop_duplicates().itertuples(index=False)
    wrong = sorted((c, int(k)) for c, k in pairs if not (0 <= k < len(classes) and classes[k] == c))
    if wrong:
        raise CxraugError(
            f"{directory}/index.csv: classes {sorted(wrong)} do not match the prepared classes "
            f"{list(classes)}; rerun synthesize after prepare"
        )
    files, labels = [], []
    for k in range(len(classes)):
        rows = index[index["label"] == k]["file"]
        rows = rows if per_class is None else rows.head(per_class)
        files += rows.tolist()
        labels += [k] * len(rows)
    if not files:
        raise CxraugError(f"{directory}: no synthetic images to evaluate; rerun synthesize")
    images = np.stack([read_png(directory / f) for f in progress(files, desc="read synthetic", unit="img")])
    if images.shape[1:] != tuple(image_shape):
        raise CxraugError(
            f"{directory}: synthetic images are {images.shape[1:]}, prepared ones {tuple(image_shape)}; "
            "rerun synthesize after prepare"
        )
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64)


def extractor_files(settings: GanMetricsParams, paths: Paths) -> dict[str, Path]:
    """Feature space -> the file torch-fidelity's extractor loads; a missing file is a one-line error."""
    files = {"embedder": paths.embedder, "classifier": paths.classifier}
    stages = {"embedder": "train_embedder", "classifier": "classify_real@baseline"}
    chosen = {}
    for name in settings.extractors:
        if not files[name].is_file():
            raise CxraugError(
                f"{files[name]}: not found (gan_metrics.extractors lists '{name}'); run `dvc repro "
                f"{stages[name]}` first, or drop it from gan_metrics.extractors"
            )
        chosen[name] = files[name]
    if settings.inception_weights is not None:
        weights = Path(settings.inception_weights)
        if not weights.is_file():
            raise CxraugError(
                f"gan_metrics.inception_weights: {weights} not found (a local copy of torch-fidelity's "
                "weights-inception-2015-12-05-6726825d.pth; or set it to null)"
            )
        chosen[fidelity.INCEPTION] = weights
    return chosen


# -------------------------------------------------------------------------------------------- fidelity


def real_mix_indices(
    synthetic_labels: torch.Tensor, real_labels: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """Indices of synthetic images at the real split's class proportions: the first
    n_real_c x min_k(n_synth_k / n_real_k) of each class c (classes missing on either side left out)."""
    s = torch.bincount(synthetic_labels, minlength=n_classes).tolist()
    r = torch.bincount(real_labels, minlength=n_classes).tolist()
    present = [c for c in range(n_classes) if s[c] and r[c]]
    if not present:
        return torch.zeros(0, dtype=torch.int64)
    tight = min(present, key=lambda c: s[c] / r[c])
    picks = []
    for c in present:
        take = s[tight] * r[c] // r[tight]  # integer arithmetic: the tightest class gives all its images
        picks.append(torch.nonzero(synthetic_labels == c).squeeze(1)[:take])
    return torch.cat(picks)


def fidelity_table(
    features: dict[str, tuple[torch.Tensor, torch.Tensor]],
    synthetic_labels: torch.Tensor,
    real_labels: torch.Tensor,
    classes: tuple[str, ...],
    settings: GanMetricsParams,
) -> tuple[dict, list[str]]:
    """{"overall": {...}, "per_class": {class: {...}}}, each with n_synthetic, n_real and
    <metric>_<extractor> keys; and the list of skipped (comparison, extractor, metric) with reasons."""
    mix = real_mix_indices(synthetic_labels, real_labels, len(classes))
    mixed_classes = torch.unique(synthetic_labels[mix])
    groups = {"overall": (mix, torch.nonzero(torch.isin(real_labels, mixed_classes)).squeeze(1))}
    for k, name in enumerate(classes):
        groups[name] = (
            torch.nonzero(synthetic_labels == k).squeeze(1),
            torch.nonzero(real_labels == k).squeeze(1),
        )
    table: dict = {"overall": {}, "per_class": {}}
    skipped = []
    for group, (s_idx, r_idx) in groups.items():
        entry = {"n_synthetic": len(s_idx), "n_real": len(r_idx)}
        for extractor, (synthetic, real) in features.items():
            scores, reasons = fidelity.fidelity_scores(
                synthetic[s_idx],
                real[r_idx],
                kid_subsets=settings.kid_subsets,
                kid_subset_size=settings.kid_subset_size,
                pr_neighbourhood=settings.pr_neighbourhood,
                min_images=settings.min_images,
                seed=settings.seed,
            )
            entry |= {fidelity.metric_key(m, extractor): round(v, 6) for m, v in scores.items()}
            skipped += [f"{group} / {extractor} / {reason}" for reason in reasons]
        if group == "overall":
            table["overall"] = entry
        else:
            table["per_class"][group] = entry
    return table, skipped


# ---------------------------------------------------------------------------------------------- stage


def cas_settings(params: Params) -> ClassifyParams:
    """classify's settings with gan_metrics.cas's overrides (and the stage's device and precision)."""
    gm, base = params.gan_metrics, params.classify
    return base.model_copy(
        update={
            "seeds": list(gm.cas.seeds),
            "budget": "epochs" if gm.cas.epochs else base.budget,  # cas.epochs set: an epochs budget
            "epochs": gm.cas.epochs or base.epochs,
            "patience": gm.cas.patience or base.patience,
            "device": gm.device,
            "precision": gm.precision,
        }
    )


def baseline_reference(paths: Paths, test: Split) -> tuple[dict | None, np.ndarray | None]:
    """The real-data baseline's test AUCs (metrics/classify/baseline.json) and its test softmax
    (data/scores/baseline.npz) when they exist; scores of other test images are an error."""
    metrics = None
    if paths.baseline_metrics.is_file():
        m = json.loads(paths.baseline_metrics.read_text())
        metrics = {
            k: m.get(k) for k in ("per_class_auc", "per_class_auc_ci", "macro_auc", "macro_auc_ci", "seeds")
        }
    scores = None
    if paths.baseline_scores.is_file():
        with np.load(paths.baseline_scores, allow_pickle=False) as z:
            if not np.array_equal(z["image_index"].astype(str), np.asarray(test.image_index).astype(str)):
                raise CxraugError(
                    f"{paths.baseline_scores} scored other test images than {paths.prepared}/test.npz; "
                    "rerun `dvc repro classify_real@baseline`"
                )
            scores = z["scores"]
    return metrics, scores


def run(params: Params, paths: Paths, hooks: Hooks = NO_HOOKS) -> StageResult:
    """FD/KID/precision/recall per feature space, CAS and the memorisation audit of one generator's images."""

    started = time.perf_counter()
    settings = params.gan_metrics
    gan = registry.get(paths.gan).name
    seed = paths.generator_seed
    replicate = layout.replicate(seed)
    synthetic_dir = paths.synthetic / gan / replicate
    if not (synthetic_dir / "index.csv").is_file():
        raise CxraugError(f"{synthetic_dir}/index.csv: not found; run `dvc repro synthesize@{gan}-{seed}`")
    files = extractor_files(settings, paths)
    device = pick_device(settings.device)
    train, val, test = (load_split(paths.prepared, s) for s in ("train", "val", "test"))
    classes = train.classes
    images, labels = load_evaluated_synthetic(
        synthetic_dir, classes, settings.synthetic_per_class, tuple(train.images.shape[1:])
    )
    inputs = [synthetic_dir / "index.csv", *(paths.prepared / f"{s}.npz" for s in ("train", "val", "test"))]
    inputs += list(files.values())
    tags = {
        "gan": gan,
        "generator_seed": str(seed),
        "synthetic.index_md5": file_md5(synthetic_dir / "index.csv"),
    }
    synth_run = _run_id_of(paths.synthesize_metrics / gan / f"{replicate}.json")
    tags |= {"synthetic.run_id": synth_run or "unknown"}

    with stage_run(
        experiment="gan_metrics",
        stage=f"gan_metrics@{gan}-{seed}",
        params=settings,
        inputs=inputs,
        run_name=gan,
        extra_tags=tags,
    ) as run_id:
        features = {
            name: tuple(
                fidelity.extract_features(x, name, path, batch_size=settings.batch_size, device=device)
                for x in (images, train.images)
            )
            for name, path in progress(files.items(), desc="features", unit="extractor")
        }
        fidelity_figures, skipped = fidelity_table(features, labels, train.labels, classes, settings)
        for reason in skipped:
            log.info("gan_metrics@%s skipped %s", gan, reason)

        audit_space = settings.extractors[0]
        audits = [
            memorisation.audit_pixels(images, train.images, settings.copy_threshold, device),
            memorisation.audit_features(*features[audit_space], settings.copy_threshold, audit_space, device),
        ]

        cas_summary = baseline = None
        if settings.cas.enabled:
            cas_params = cas_settings(params)
            result = cas.classification_accuracy_score(
                images, labels, val, test, cas_params, on_epoch=_log_cas_epoch
            )
            cas_summary = result.summary(test, cas_params)
            baseline, baseline_scores = baseline_reference(paths, test)
            cas_summary["baseline"] = baseline
            cas_summary["vs_baseline"] = (
                cas.compare_with_baseline(
                    result.scores, baseline_scores, test, cas_params.bootstrap, cas_params.ci_level
                )
                if baseline_scores is not None
                else None
            )

        metrics = {
            "gan": gan,
            "classes": list(classes),
            "extractors": list(files),
            "synthetic_per_class": _counts(labels, classes),
            "real_train_per_class": _counts(train.labels, classes),
            "fidelity": fidelity_figures,
            "skipped": {"count": len(skipped), "reasons": skipped},
            "memorisation": {
                "copy_threshold": settings.copy_threshold,
                "rule": "near-copy: distance to the nearest real training image < copy_threshold x the "
                "median distance of a real training image to its nearest other real training image",
                "pixel": audits[0].summary(labels.numpy(), classes),
                "feature": audits[1].summary(labels.numpy(), classes),
            },
            "cas": cas_summary,
            "mlflow_run_id": run_id,
        }
        _log_to_mlflow(metrics, audits, images, train.images, settings.audit_pairs)
    metrics["generator_seed"] = seed
    path = atomic_write_json(paths.out / gan / f"{replicate}.json", metrics)
    return StageResult(
        f"gan_metrics@{gan}-{seed}",
        _summary(gan, metrics, time.perf_counter() - started),
        (path,),
        run_id,
        metrics,
    )


def _summary(gan: str, m: dict, seconds: float) -> str:
    overall = m["fidelity"]["overall"]
    figures = ", ".join(
        f"{k} {v:.4g}" for k, v in overall.items() if k.split("_")[0] in ("fd", "fid", "precision", "recall")
    )
    pixel, feature = m["memorisation"]["pixel"], m["memorisation"]["feature"]
    return (
        f"{gan}: overall {figures or 'no fidelity figure (too few images)'}; near-copies: "
        f"{pixel['copy_fraction']:.1%} in pixels, {feature['copy_fraction']:.1%} in {feature['space']} "
        f"features (threshold {m['memorisation']['copy_threshold']:g} x real NN median)"
        + (f"; CAS macro AUC {m['cas']['macro_auc']:.3f}" if m["cas"] else "")
        + (f"; {m['skipped']['count']} metric(s) skipped (too few images)" if m["skipped"]["count"] else "")
        + f"; {seconds:.0f}s"
    )


def _counts(labels: torch.Tensor, classes: tuple[str, ...]) -> dict[str, int]:
    return dict(zip(classes, torch.bincount(labels, minlength=len(classes)).tolist(), strict=True))


def _run_id_of(path: Path) -> str | None:
    try:
        value = json.loads(path.read_text()).get("mlflow_run_id")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


# --------------------------------------------------------------------------------------------- MLflow


def _log_cas_epoch(seed: int, epoch) -> None:
    import mlflow

    mlflow.log_metrics(
        {f"cas/s{seed}/train_loss": epoch.train_loss, f"cas/s{seed}/val_auc_macro": epoch.val_macro_auc},
        step=epoch.epoch,
    )


def flat_metrics(metrics: dict) -> dict[str, float]:
    """The JSON's figures as MLflow metric names: fidelity/<key>[/<class>], memorisation/..., cas/..."""
    flat = {}
    fid = metrics["fidelity"]
    for group, entry in [("", fid["overall"]), *((f"/{slug(c)}", e) for c, e in fid["per_class"].items())]:
        flat |= {f"fidelity/{k}{group}": v for k, v in entry.items()}
    for space in ("pixel", "feature"):
        audit = metrics["memorisation"][space]
        name = audit["space"]
        flat[f"memorisation/copy_fraction_{name}"] = audit["copy_fraction"]
        flat[f"memorisation/real_nn_median_{name}"] = audit["real_nn_median"]
        flat |= {
            f"memorisation/copy_fraction_{name}/{slug(c)}": v["copy_fraction"]
            for c, v in audit["per_class"].items()
        }
    cas = metrics["cas"]
    if cas:
        flat["cas/test_auc_macro"] = cas["macro_auc"]
        flat |= {f"cas/test_auc/{slug(c)}": v for c, v in cas["per_class_auc"].items()}
        if cas["vs_baseline"]:
            flat["cas/difference_vs_baseline_macro"] = cas["vs_baseline"]["macro"]["difference"]
    flat["skipped"] = metrics["skipped"]["count"]
    return {k: float(v) for k, v in flat.items() if v is not None}


def _log_to_mlflow(metrics: dict, audits, synthetic: torch.Tensor, real: torch.Tensor, n_pairs: int) -> None:
    import mlflow

    mlflow.log_metrics(flat_metrics(metrics))
    mlflow.log_figure(memorisation.distance_histograms(audits), "memorisation/distances.png")
    for audit in audits:
        pairs = memorisation.closest_pairs(audit, synthetic, real, n_pairs)
        tracking.log_grid(pairs, key=f"memorisation/closest_{audit.space}", nrow=8)
    mlflow.log_dict(metrics, "gan_metrics.json")
