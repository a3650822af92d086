"""`external_*` stages: score one trained classifier variant (every seed) on an external data set.

All of the external set is test: every single-label image of the study's classes in DIR, converted as
`prepare` converts (cxraug.data.external). The study's classes and image size come from the model file;
an external image equal to a prepared image (pixels or Image Index) is an error naming the file.

Outputs: data/scores/external/<NAME>/<V>.npz (the test scores' fields) and metrics/external/<NAME>/<V>.json
(per-class and macro AUC with bootstrap CIs over patients where DIR's metadata has them, else images), and
an MLflow run in the `external` experiment tagged with the variant's classify run.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cxraug.classifier.external import (
    check_name,
    external_metrics,
    external_paths,
    load_seed_models,
    score_external,
    write_external_scores,
)
from cxraug.classifier.variants import Variant, parse_variant
from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_write_json, pick_device, slug
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult
from cxraug.core.tracking import stage_run
from cxraug.data.datasets import load_split
from cxraug.data.external import ExternalSet, check_no_overlap, read_external
from cxraug.gans import registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    """What the stage reads and writes, relative to the project root (DVC runs it there)."""

    variant: str
    name: str  # NAME: the external set's directory under scores/ and metrics/
    data: Path  # DIR: NIH layout, class folders, or a MedMNIST+ npz
    models: Path = layout.CLASSIFIERS
    prepared: Path = layout.PREPARED  # the study's images, for the overlap guard
    classify_metrics: Path = layout.CLASSIFY_METRICS  # the variant's classify run id
    scores: Path = layout.EXTERNAL_SCORES
    metrics: Path = layout.EXTERNAL_METRICS


def stage_name(variant: Variant, name: str, params: Params) -> str:
    """The dvc.yaml stage: external_{real,aug,gan}@data<i>-..., i = NAME's place in external.datasets
    (DVC names a matrix entry that is a mapping by its index); a set not in params runs as `external_test`."""
    names = [d.name for d in params.external.datasets]
    if name not in names:
        return "external_test"
    data = f"data{names.index(name)}"
    if variant.gan is not None:
        return f"external_gan@{data}-{variant.gan}-{variant.n}"
    if variant.n:
        return f"external_aug@{data}-{variant.n}"
    return f"external_real@{data}-{variant.name}"


def _classify_run_id(paths: Paths, variant: str) -> str | None:
    path = paths.classify_metrics / f"{variant}.json"
    try:
        return json.loads(path.read_text()).get("mlflow_run_id")
    except (OSError, json.JSONDecodeError):
        log.warning("%s: not readable; the external run is not linked to its classify run", path)
        return None


def _check_against_study(external: ExternalSet, prepared: Path) -> None:
    train, val, test = (load_split(prepared, s) for s in ("train", "val", "test"))
    if train.classes != external.classes:
        raise CxraugError(
            f"{prepared}: classes {list(train.classes)} differ from the classifier's "
            f"{list(external.classes)}; rerun classify after prepare"
        )
    check_no_overlap(external, train, {"val": val, "test": test})


def run(params: Params, paths: Paths, hooks: Hooks = NO_HOOKS) -> StageResult:
    """Score every seed of variant V on DIR; write its scores, metrics and one MLflow run."""
    started = time.perf_counter()
    settings = params.classify
    variant = parse_variant(paths.variant, params.synthesize.n_per_class, registry.names())
    name = check_name(paths.name)
    model_path = paths.models / f"{variant.name}.pt"
    if not model_path.is_file():
        raise CxraugError(f"{model_path}: not found; run `cxraug classify --variant {variant.name}` first")
    device = pick_device(settings.device)
    models = load_seed_models(model_path, device)
    first = models[0].model
    external = read_external(paths.data, first.classes, first.config["image_size"])
    _check_against_study(external, paths.prepared)
    seeds = [m.seed for m in models]
    if len(seeds) < len(settings.seeds):
        log.warning("%s holds seeds %s only (written before classify kept every seed)", model_path, seeds)

    stage = stage_name(variant, name, params)
    classify_run = _classify_run_id(paths, variant.name)
    tags = {"variant": variant.name, "external.name": name, "external.source": external.layout}
    tags |= {"external.pixels_md5": external.md5(), "external.data": str(paths.data)}
    if classify_run:
        tags["classify.run_id"] = classify_run
    scores_path, metrics_path = external_paths(name, variant.name, paths.scores, paths.metrics)
    with stage_run(
        experiment="external",
        stage=stage,
        params=settings,
        inputs=[model_path],
        run_name=f"{name}/{variant.name}",
        extra_tags=tags,
    ) as run_id:
        scores = score_external(models, external, settings.precision, settings.eval_batch_size)
        metrics = external_metrics(
            scores,
            external,
            seeds,
            settings.bootstrap,
            settings.ci_level,
            variant=variant.name,
            name=name,
            generator_seeds=[m.generator_seed for m in models],
        )
        metrics["mlflow_run_id"] = run_id
        metrics["classify_run_id"] = classify_run
        write_external_scores(scores_path, external, scores, seeds, [m.generator_seed for m in models])
        atomic_write_json(metrics_path, metrics)
        _log_run(metrics)
    seconds = time.perf_counter() - started
    return StageResult(
        stage, _summary(metrics, seconds), (scores_path, metrics_path), run_id, metrics, detail=external
    )


def _log_run(metrics: dict) -> None:
    import mlflow

    values = {"external_images": metrics["images"]}
    if metrics["macro_auc"] is not None:
        values["external_auc_macro"] = metrics["macro_auc"]
        values["external_auc_macro_ci_lo"], values["external_auc_macro_ci_hi"] = metrics["macro_auc_ci"]
    for c, auc in metrics["per_class_auc"].items():
        if auc is not None:  # an absent class has no AUC: nothing is logged for it
            lo, hi = metrics["per_class_auc_ci"][c]
            values |= {f"external_auc/{slug(c)}": auc, f"external_auc_ci_lo/{slug(c)}": lo}
            values[f"external_auc_ci_hi/{slug(c)}"] = hi
    mlflow.log_metrics(values)
    mlflow.log_dict(metrics, "metrics.json")


def _summary(m: dict, seconds: float) -> str:
    def auc(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.3f}"

    per_class = ", ".join(f"{c} {auc(a)}" for c, a in m["per_class_auc"].items())
    ci = m["macro_auc_ci"] or [float("nan")] * 2
    return (
        f"{m['variant']} on {m['name']} ({m['images']} images, {m['bootstrap']['unit']} bootstrap): macro "
        f"AUC {auc(m['macro_auc'])} [{ci[0]:.3f}, {ci[1]:.3f}] over seeds {m['seeds']} in {seconds:.0f}s; "
        f"{per_class}"
    )
