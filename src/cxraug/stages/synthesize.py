"""`synthesize@<gan>` stage: draw class-conditional candidates from a trained GAN and keep only those
the model itself accepts as the intended class (BAGAN: its discriminator's K+1 softmax; OpenGAN:
realness and the embedder's nearest class), then write them as PNGs with an index.

Policy, per class:
- the rule is `filter.per_gan.<gan>` (synthesis/filters.py: argmax, threshold or none; by default BAGAN
  argmax and OpenGAN none, sampled unfiltered as published, scores still recorded);
- candidates are drawn in batches of `batch_size` until max(n_per_class) pass the threshold or
  ceil(max_tries_factor x wanted) candidates have been drawn (the last batch is shortened to the cap);
- accepted images keep their draw order, so the first n of a class are what a variant with n synthetic
  images per class trains on (`load_synthetic`), and the n=1000 set is a prefix of the n=3000 set;
- a class that falls short of max(n_per_class) is written anyway and its shortfall recorded; the stage
  fails, after writing and logging (so the score histograms show why), only when some class has fewer
  than min(n_per_class) images, i.e. when not even the smallest variant could be trained;
- each class draws from its own generator, seeded from `seed`: a class's images do not change when
  another class needs more or fewer tries.
- with `filter.drop_near_copies`, a passing candidate whose nearest real training image is closer (pixel
  RMSE) than `filter.copy_threshold` x the median real-to-real nearest-neighbour RMSE is dropped and counted
  (metrics/memorisation.py); off, nothing about the draws changes.

Layout (the contract with `classify`, in synthetic_files.py): <out>/<class_slug>/<00000>.png (8-bit gray)
and <out>/index.csv with columns file (relative to <out>), class, label, score, in acceptance order.
MLflow logging is in synthesize_tracking.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxraug.core import layout
from cxraug.core.config import GanFilterParams, Params, SamplerParams, SynthesizeParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import Precision, atomic_write_json, pick_device, pick_precision
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult
from cxraug.gans import registry
from cxraug.gans.registry import Proposer
from cxraug.synthesis.draw import ClassDraw, SynthesizeResult, near_copy_filter, synthesize
from cxraug.synthesis.files import read_exemplars, write_provenance, write_synthetic
from cxraug.synthesis.filters import filter_rule
from cxraug.synthesis.tracking import log_to_mlflow, training_run_id


def run_synthesize(
    params: SynthesizeParams,
    gan: str,
    model_dir: Path,
    out_dir: Path,
    metrics_path: Path | None,
    train_metrics: Path | None = None,
    prepared: Path | None = None,
    replicate: int = 0,
    stage: str | None = None,
    required: int | None = None,
) -> SynthesizeResult:
    """The DVC stage synthesize@<gan>: max(n_per_class) filtered images per class of the trained GAN.
    `prepared` (data/prepared) holds the real training images that `filter.drop_near_copies` compares with.
    The stage fails when a class keeps fewer than `required` (default min(n_per_class)) images."""
    device = pick_device(params.device)
    proposer = with_sampler(registry.load_proposer(gan, model_dir, device, params.precision), params.sampler)
    near_copy = near_copy_filter(params, prepared, device) if params.filter.drop_near_copies else None
    return _run(
        proposer,
        params,
        pick_precision(device, params.precision),
        stage=stage or f"synthesize@{gan}-{replicate}",
        gan=gan,
        model_dir=model_dir,
        gan_run=training_run_id(model_dir, train_metrics),
        out_dir=out_dir,
        metrics_path=metrics_path,
        wanted=max(params.n_per_class),
        required=min(params.n_per_class) if required is None else required,
        near_copy=near_copy,
    )


def run_exemplars(
    params: SynthesizeParams,
    gan: str,
    model_dir: Path,
    exemplars_dir: Path,
    label: str,
    n: int,
    image_size: int,
    out_dir: Path,
    metrics_path: Path | None = None,
) -> SynthesizeResult:
    """An unseen class: OpenGAN conditioned on the embeddings of a few exemplar images; n filtered images."""
    generator = registry.get(gan)
    if generator.load_exemplar_proposer is None:
        able = " or ".join(g.name for g in registry.GENERATORS.values() if g.load_exemplar_proposer)
        raise CxraugError(f"--exemplars needs --gan {able}: {gan} cannot draw a class it was not trained on")
    if not Path(model_dir).is_dir():
        raise CxraugError(
            f"{model_dir}: no trained {gan} model; run `dvc repro {generator.train_stage}` first"
        )
    exemplars = read_exemplars(Path(exemplars_dir), image_size)
    device = pick_device(params.device)
    proposer = generator.load_exemplar_proposer(Path(model_dir), exemplars, label, device)
    return _run(
        proposer,
        params,
        pick_precision(device, params.precision),
        stage="synthesize-exemplars",
        gan=gan,
        model_dir=model_dir,
        gan_run=training_run_id(model_dir),
        out_dir=out_dir,
        metrics_path=metrics_path,
        wanted=n,
        required=n,
        extra_tags={"exemplars.dir": str(exemplars_dir), "exemplars.count": str(len(exemplars))},
    )


def with_sampler(proposer: Proposer, sampler: SamplerParams) -> Proposer:
    """The proposer under synthesize.sampler's settings, if it has a sampler (diffusion); GANs as they are."""
    changes = sampler.changes()
    return proposer.with_sampling(**changes) if changes and hasattr(proposer, "with_sampling") else proposer


def _run(
    proposer: Proposer,
    params: SynthesizeParams,
    precision: Precision,
    *,
    stage: str,
    gan: str,
    model_dir: Path,
    gan_run: str | None,
    out_dir: Path,
    metrics_path: Path | None,
    wanted: int,
    required: int,
    extra_tags: dict[str, str] | None = None,
    near_copy=None,
) -> SynthesizeResult:
    generator = torch.Generator().manual_seed(params.seed)
    rule = filter_rule(params.filter, gan)
    start = time.perf_counter()
    with torch.inference_mode(), precision.autocast():
        draws = synthesize(
            proposer,
            wanted,
            rule,
            params.filter.max_tries_factor,
            params.batch_size,
            generator,
            near_copy,
        )
    result = SynthesizeResult(draws, time.perf_counter() - start, Path(out_dir))
    write_synthetic(draws, Path(out_dir))
    sampler = vars(proposer.sampling) if hasattr(proposer, "sampling") else None  # diffusion's, as drawn
    write_provenance(Path(out_dir), model_dir, rule.mode, rule.threshold, sampler)
    result.run_id = log_to_mlflow(result, params, stage, gan, model_dir, gan_run, precision, extra_tags or {})
    if metrics_path is not None:
        atomic_write_json(
            metrics_path,
            {
                "gan": gan,
                "filter": {
                    "mode": rule.mode,
                    "threshold": rule.threshold if rule.mode == "threshold" else None,
                },
                "acceptance_rate_per_class": {d.name: round(d.acceptance_rate, 6) for d in draws},
                "wanted_per_class": wanted,
                "accepted": result.accepted,
                "tried": result.tried,
                "acceptance_rate": round(sum(d.passed for d in draws) / max(result.tried, 1), 6),
                "per_class": {d.name: d.summary() for d in draws},
                "shortfall": {d.name: d.shortfall for d in draws if d.shortfall},
                "candidates_per_second": round(result.candidates_per_second, 1),
                "mlflow_run_id": result.run_id,
                "gan_run_id": gan_run,
            }
            | ({} if sampler is None else {"sampler": sampler})
            | ({} if near_copy is None else {"near_copies": _near_copy_summary(draws, near_copy)}),
        )
    short = {d.name: d.accepted for d in draws if d.accepted < required}
    if short:
        raise CxraugError(
            f"{gan}: too few candidates passed the filter ({rule.describe()}) within "
            f"{params.filter.max_tries_factor:g}x tries: accepted {short}, need {required} per class "
            f"(wrote them to {out_dir}; see the score histograms in MLflow run {result.run_id}); loosen "
            f"synthesize.filter.per_gan.{gan} (or synthesize.filter.threshold) or raise "
            "synthesize.filter.max_tries_factor"
        )
    return result


def _near_copy_summary(draws: list[ClassDraw], near_copy) -> dict:
    return {
        "dropped": sum(d.near_copies or 0 for d in draws),
        "per_class": {d.name: d.near_copies for d in draws},
        "copy_threshold": near_copy.copy_threshold,
        "threshold_rmse": round(near_copy.threshold, 6),
        "real_nn_median_rmse": round(near_copy.reference, 6),
    }


# ------------------------------------------------------------------------------------------ the stage


def replicate_draws(params: SynthesizeParams, generator_seed: int) -> SynthesizeParams:
    """Replicate 0 draws with synthesize.seed itself; replicate k with a stream derived from (seed, k), so
    the synthetic draw varies with the generator replicate, as the inference assumes."""
    if generator_seed == 0:
        return params
    derived = int(np.random.SeedSequence([params.seed, generator_seed]).generate_state(1)[0])
    return params.model_copy(update={"seed": derived})


def sensitivity_params(params: Params, mode: str) -> SynthesizeParams:
    """synthesize's settings for the filter-sensitivity set of `mode`: filter_sensitivity.gan filtered by
    `mode` (threshold filter_sensitivity.threshold), filter_sensitivity.n_per_class images per class."""
    sensitivity = params.filter_sensitivity
    if mode not in sensitivity.modes:
        raise CxraugError(
            f"--filter-mode {mode}: not in filter_sensitivity.modes ({', '.join(sensitivity.modes)})"
        )
    rule = GanFilterParams(mode=mode, threshold=sensitivity.threshold)
    per_gan = {**params.synthesize.filter.per_gan, sensitivity.gan: rule}
    filter_ = params.synthesize.filter.model_copy(update={"per_gan": per_gan})
    return params.synthesize.model_copy(update={"n_per_class": [sensitivity.n_per_class], "filter": filter_})


@dataclass(frozen=True)
class Paths:
    """Where synthesize@<gan> reads and writes. With `exemplars`, the unseen class `label` is drawn
    instead (n images, into `out`; no metrics file unless one is given)."""

    gan: str = "bagan"
    models: Path | None = None  # default: layout.model_dir(gan)
    out: Path | None = None  # default: layout.synthetic_dir(gan)
    metrics: Path | None = None  # default: layout.synthesize_metrics(gan) (none with exemplars)
    prepared: Path = layout.PREPARED  # real training images, for filter.drop_near_copies
    exemplars: Path | None = None
    label: str | None = None
    n: int | None = None
    generator_seed: int = 0  # the replicate: models/<gan>/seed<k> -> data/synthetic/<gan>/seed<k>
    filter_mode: str | None = None  # the filter-sensitivity set of this mode (synthesize_filter@<mode>-<k>)


def run(params: Params, paths: Paths, hooks: Hooks = NO_HOOKS) -> StageResult:
    gan = registry.get(paths.gan).name
    seed = paths.generator_seed
    models = paths.models or layout.model_dir(gan, seed)
    if paths.filter_mode is not None:
        result, stage, metrics = _run_filter_set(params, paths, gan, models)
    elif paths.exemplars is None:
        if paths.label is not None or paths.n is not None:
            raise CxraugError("--label and --n describe an unseen class: give them with --exemplars DIR")
        metrics = paths.metrics or layout.synthesize_metrics(gan, seed)
        result = run_synthesize(
            replicate_draws(params.synthesize, seed),
            gan,
            models,
            paths.out or layout.synthetic_dir(gan, seed),
            metrics,
            train_metrics=layout.replicate_metrics(registry.get(gan).train_stage, seed),
            prepared=paths.prepared,
            replicate=seed,
        )
        stage = f"synthesize@{gan}-{seed}"
    else:
        if paths.label is None or paths.n is None or paths.out is None:
            raise CxraugError("--exemplars needs --label NAME, --n N and --out DIR")
        result = run_exemplars(
            params.synthesize,
            gan,
            models,
            paths.exemplars,
            paths.label,
            paths.n,
            params.prepare.image_size,
            paths.out,
            paths.metrics,
        )
        stage, metrics = "synthesize-exemplars", None
    kept = ", ".join(f"{d.name} {d.accepted}/{d.wanted} ({d.acceptance_rate:.0%} pass)" for d in result.draws)
    summary = (
        f"kept {result.accepted:,} of {result.tried:,} candidates in {result.seconds:.1f}s "
        f"({result.candidates_per_second:,.0f}/s): {kept}"
    )
    outputs = (result.out_dir,) + ((metrics,) if metrics is not None else ())
    return StageResult(stage, summary, outputs, result.run_id, {"accepted": result.accepted}, result)


def _run_filter_set(params: Params, paths: Paths, gan: str, models: Path):
    """synthesize_filter@<mode>-<k>: a mode that cannot fill n per class within the try budget writes what
    passed and records the shortfall (metrics `per_class`, `shortfall`); it never fails the pipeline, and
    classify_filter trains on what exists."""
    if paths.exemplars is not None or paths.label is not None or paths.n is not None:
        raise CxraugError("--filter-mode draws the trained classes: drop --exemplars, --label and --n")
    if gan != params.filter_sensitivity.gan:
        raise CxraugError(
            f"--filter-mode varies filter_sensitivity.gan ({params.filter_sensitivity.gan}), not {gan}"
        )
    seed, mode = paths.generator_seed, paths.filter_mode
    name = layout.filter_set(gan, mode)
    metrics = paths.metrics or layout.synthesize_metrics(name, seed)
    stage = f"synthesize_filter@{mode}-{seed}"
    result = run_synthesize(
        replicate_draws(sensitivity_params(params, mode), seed),
        gan,
        models,
        paths.out or layout.synthetic_dir(name, seed),
        metrics,
        train_metrics=layout.replicate_metrics(registry.get(gan).train_stage, seed),
        prepared=paths.prepared,
        replicate=seed,
        stage=stage,
        required=0,
    )
    return result, stage, metrics
