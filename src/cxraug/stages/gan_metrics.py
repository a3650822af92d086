"""`gan_metrics@<gan>-<k>` stage: is replicate k of the generator good, does it copy its training images,
and is any of it evidence at all?

For the synthetic images written by synthesize@<gan>-<k> (any generator of cxraug.gans.registry):

1. Fidelity with a scale (metrics/reference.py over metrics/fidelity.py, torch-fidelity's code): FD, KID,
   precision and recall of the synthetic images against the HELD-OUT REAL VAL split ("generated vs
   real"), beside the same figure between real train and real val ("real vs real": the floor), at equal
   set sizes (the larger side subsampled `draws` times; mean and `_sd`), overall at val's class mix and
   per class, in every feature space of `gan_metrics.extractors` (+ Inception-v3 from a local file):
   `random` (a fixed random conv net no generator saw: the independent space), `embedder` (OpenGAN's own:
   it trains, conditions and filters with it; replicate k's) and `classifier` (the real-data VGG16's
   penultimate layer). A space whose real features do not spread is reported as degenerate, without figures.
2. Classification accuracy score (classifier/cas.py): trained on synthetic only, tested on real test.
3. Memorisation audit (metrics/memorisation.py): every synthetic image's nearest real training image in
   pixels and in the first extractor's space, against a yardstick that excludes a patient's own films.
4. Class-blindness: CAS at chance, or synthetic images not separable by class in an independent space
   where the real val images are: `class_blind` lists the reasons and the report warns.

Writes metrics/gan/<gan>/seed<k>.json and one MLflow run (experiment `gan_metrics`).
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
from cxraug.metrics import fidelity, memorisation, reference
from cxraug.nets.random_features import RandomConvFeatures
from cxraug.synthesis.files import read_index, read_png

log = logging.getLogger(__name__)
FIDELITY_METRICS = ("fd", "kid", "precision", "recall")


# the feature spaces of our own nets (metrics/fidelity.py loads no model itself); the random net's seed
# travels where a model file would
fidelity.define("random", lambda path: RandomConvFeatures(int(path)), needs_file=False)
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
        rows = index[index["label"] == k]["file"].head(per_class)  # head(None): every row
        files += rows.tolist()
        labels += [k] * len(rows)
    if not files:
        raise CxraugError(f"{directory}: no synthetic images to evaluate; rerun synthesize")
    shown = progress(files, desc="read synthetic", unit="img")  # pragma: no mutate (display only)
    images = np.stack([read_png(directory / f) for f in shown])
    if images.shape[1:] != tuple(image_shape):
        raise CxraugError(
            f"{directory}: synthetic images are {images.shape[1:]}, prepared ones {tuple(image_shape)}; "
            "rerun synthesize after prepare"
        )
    return torch.from_numpy(images), torch.tensor(labels, dtype=torch.int64)


def extractor_files(settings: GanMetricsParams, paths: Paths) -> dict[str, Path | str]:
    """Feature space -> the file torch-fidelity's extractor loads (the random net: its seed); a missing
    file is a one-line error."""
    files = {"embedder": paths.embedder, "classifier": paths.classifier}
    stages = {"embedder": "train_embedder", "classifier": "classify_real@baseline"}
    chosen: dict[str, Path | str] = {}
    for name in settings.extractors:
        if name == "random":
            chosen[name] = str(settings.random_seed)
            continue
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
        sets = {"synthetic": images, "train": train.images, "val": val.images}
        set_labels = {"synthetic": labels, "train": train.labels, "val": val.labels}
        features = {
            name: {
                side: fidelity.extract_features(x, name, path, batch_size=settings.batch_size, device=device)
                for side, x in sets.items()
            }
            for name, path in progress(files.items(), desc="features", unit="extractor")  # pragma: no mutate
        }
        fidelity_figures, skipped = reference.reference_table(
            features,
            set_labels,
            classes,
            draws=settings.draws,
            degenerate_spread=settings.degenerate_spread,
            seed=settings.seed,
            kid_subsets=settings.kid_subsets,
            kid_subset_size=settings.kid_subset_size,
            pr_neighbourhood=settings.pr_neighbourhood,
            min_images=settings.min_images,
        )
        for reason in skipped:
            log.info("gan_metrics@%s skipped %s", gan, reason)
        degenerate = [s for s, e in fidelity_figures["spaces"].items() if e["degenerate"]]
        for space in degenerate:
            log.warning(
                "gan_metrics@%s: the %s feature space is degenerate (real features do not spread)", gan, space
            )

        audit_space = settings.extractors[0]
        patients = memorisation.patient_codes(train.patient_ids)
        audits = [
            memorisation.audit(
                images, train.images, train.labels, patients, settings.copy_threshold, "pixel", device
            ),
            memorisation.audit(
                features[audit_space]["synthetic"],
                features[audit_space]["train"],
                train.labels,
                patients,
                settings.copy_threshold,
                audit_space,
                device,
            ),
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
            "real_val_per_class": _counts(val.labels, classes),
            "fidelity": {
                "reference": "val (held out: no generator trains on it)",
                "floor": "real train vs real val, the same images per class as generated vs val",
                "draws": settings.draws,
                **fidelity_figures,
            },
            "degenerate_spaces": degenerate,
            "skipped": {"count": len(skipped), "reasons": skipped},
            "memorisation": {
                "copy_threshold": settings.copy_threshold,
                "rule": "near-copy: distance to the nearest real training image < copy_threshold x the "
                "median distance of a real training image to its nearest real training image of ANOTHER "
                "patient (a synthetic image has no patient: all real training images are searched)",
                "pixel": audits[0].summary(labels.numpy(), classes),
                "feature": audits[1].summary(labels.numpy(), classes),
            },
            "cas": cas_summary,
            "class_blind": reference.class_blind(
                cas_summary, fidelity_figures["spaces"], settings.cas_chance
            ),
            "mlflow_run_id": run_id,
        }
        for reason in metrics["class_blind"]:
            log.warning("gan_metrics@%s: class-blind: %s", gan, reason)
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
    gen, floor = overall["generated_vs_real"], overall["real_vs_real"]
    figures = ", ".join(
        f"{k} {v:.4g} (real {floor[k]:.4g})"
        for k, v in gen.items()
        if k.split("_")[0] in ("fd", "fid") and not k.endswith("_sd") and k in floor
    )
    pixel, feature = m["memorisation"]["pixel"], m["memorisation"]["feature"]
    return (
        f"{gan}: vs val {figures or 'no fidelity figure (too few images)'}; near-copies: "
        f"{pixel['copy_fraction']:.1%} in pixels, {feature['copy_fraction']:.1%} in {feature['space']} "
        f"features (threshold {m['memorisation']['copy_threshold']:g} x real other-patient NN median)"
        + (f"; CAS macro AUC {m['cas']['macro_auc']:.3f}" if m["cas"] else "")
        + (f"; DEGENERATE: {', '.join(m['degenerate_spaces'])}" if m["degenerate_spaces"] else "")
        + ("; CLASS-BLIND" if m["class_blind"] else "")
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
        for side in ("generated_vs_real", "real_vs_real"):
            flat |= {f"fidelity/{side}/{k}{group}": v for k, v in entry[side].items()}
    flat |= {f"fidelity/real_spread_{s}": e["real_spread"] for s, e in fid["spaces"].items()}
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
    flat["class_blind"] = int(bool(metrics["class_blind"]))
    return {k: float(v) for k, v in flat.items() if v is not None}


def _log_to_mlflow(metrics: dict, audits, synthetic: torch.Tensor, real: torch.Tensor, n_pairs: int) -> None:
    import mlflow

    mlflow.log_metrics(flat_metrics(metrics))
    mlflow.log_figure(memorisation.distance_histograms(audits), "memorisation/distances.png")
    for audit in audits:
        pairs = memorisation.closest_pairs(audit, synthetic, real, n_pairs)
        if len(pairs):  # a row of synthetic images above the real training image closest to each
            rows, labels = [pairs[0::2], pairs[1::2]], ["synthetic", "closest real (train)"]
            title = f"the {len(pairs) // 2} synthetic images closest to a training image, {audit.space} space"
            tracking.log_labelled_grid(rows, labels, title, key=f"memorisation/closest_{audit.space}")
    mlflow.log_dict(metrics, "gan_metrics.json")
