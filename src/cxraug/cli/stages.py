"""The pipeline's verbs, one per DVC stage: each builds its stage's paths (defaults from core/layout.py,
the paths dvc.yaml passes), calls `cxraug.stages.<stage>.run` and prints the StageResult."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from cxraug.cli.options import DEFAULT_PARAMS, ParamsOption, PreparedOption, app, echo, load
from cxraug.core import layout


def _option(help: str):
    return typer.Option(help=help)


@app.command()
def prepare(
    params: ParamsOption = DEFAULT_PARAMS,
    raw: Annotated[Path, _option("raw data: NIH layout or MedMNIST+ npz")] = layout.RAW,
    out: Annotated[Path, _option("directory for train/val/test.npz and split.csv")] = layout.PREPARED,
    metrics: Annotated[Path, _option("counts per class and split, skipped files")] = layout.PREPARE_METRICS,
) -> None:
    """Keep single-label images of the chosen classes, split them by patient, write uint8 arrays."""
    from cxraug.stages import prepare as stage

    echo(stage.run(load(params), stage.Paths(raw, out, metrics)))


@app.command("train-bagan")
def train_bagan(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: Annotated[Path, _option("prepared splits (train.npz, val.npz)")] = layout.PREPARED,
    out: Annotated[Path, _option("directory for the models and class Gaussians")] = layout.BAGAN_MODELS,
    metrics: Annotated[Path, _option("final metrics JSON")] = layout.TRAIN_BAGAN_METRICS,
    checkpoints: Annotated[Path, _option("resumable training state")] = layout.TRAIN_BAGAN_CHECKPOINTS,
    seed: Annotated[
        int | None, typer.Option(min=0, help="generator replicate: overrides the section's seed")
    ] = None,
) -> None:
    """Train BAGAN: an autoencoder on the real training images, a Gaussian per class over its latent
    codes, then a GAN whose generator starts as the decoder and whose discriminator has K+1 outputs.
    Interrupted? Run it again: it resumes from the last checkpoint, in the same MLflow run."""
    from cxraug.stages import train_bagan as stage

    echo(stage.run(load(params), stage.Paths(prepared, out, metrics, checkpoints, seed)))


@app.command("train-embedder")
def train_embedder(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = layout.PREPARED,
    out: Annotated[Path, _option("the frozen embedder")] = layout.EMBEDDER,
    metrics: Annotated[Path, _option("val k-NN accuracy, recall@1, timings")] = layout.TRAIN_EMBEDDER_METRICS,
    checkpoints: Annotated[Path, _option("resumable training state")] = layout.TRAIN_EMBEDDER_CHECKPOINTS,
    seed: Annotated[
        int | None, typer.Option(min=0, help="generator replicate: overrides the section's seed")
    ] = None,
) -> None:
    """Train the metric-learning embedder (supervised contrastive) on the train split; report val k-NN."""
    from cxraug.stages import train_embedder as stage

    echo(stage.run(load(params), stage.Paths(prepared, out, metrics, checkpoints, seed)))


@app.command("train-opengan")
def train_opengan(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = layout.PREPARED,
    embedder: Annotated[Path, _option("frozen embedder (train-embedder)")] = layout.EMBEDDER,
    out: Annotated[Path, _option("model directory (opengan.pt + embedder.pt)")] = layout.OPENGAN_MODELS,
    metrics: Annotated[Path, _option("losses, sample agreement, timings")] = layout.TRAIN_OPENGAN_METRICS,
    checkpoints: Annotated[Path, _option("resumable training state")] = layout.TRAIN_OPENGAN_CHECKPOINTS,
    seed: Annotated[
        int | None, typer.Option(min=0, help="generator replicate: overrides the section's seed")
    ] = None,
) -> None:
    """Train the OpenGAN-style GAN: G(z, e) with embedding-conditional batch norm, projection D(x, e)."""
    from cxraug.stages import train_opengan as stage

    echo(stage.run(load(params), stage.Paths(prepared, embedder, out, metrics, checkpoints, seed)))


@app.command("train-diffusion")
def train_diffusion(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = layout.PREPARED,
    out: Annotated[Path, _option("model directory (unet.pt + diffusion.json)")] = layout.DIFFUSION_MODELS,
    metrics: Annotated[Path, _option("losses, step and sampler rates")] = layout.TRAIN_DIFFUSION_METRICS,
    checkpoints: Annotated[Path, _option("resumable training state")] = layout.TRAIN_DIFFUSION_CHECKPOINTS,
    seed: Annotated[
        int | None, typer.Option(min=0, help="generator replicate: overrides the section's seed")
    ] = None,
) -> None:
    """Train the class-conditional diffusion model (DDPM, classifier-free guidance, EMA weights).
    Interrupted? Run it again: it resumes from the last checkpoint, in the same MLflow run."""
    from cxraug.stages import train_diffusion as stage

    echo(stage.run(load(params), stage.Paths(prepared, out, metrics, checkpoints, seed)))


@app.command()
def synthesize(
    gan: Annotated[str, _option("which trained generator samples: bagan | opengan | diffusion")],
    params: ParamsOption = DEFAULT_PARAMS,
    models: Annotated[Path | None, _option("the trained generator's directory [default: models/GAN]")] = None,
    out: Annotated[
        Path | None, _option("directory replaced by the PNGs + index.csv [default: data/synthetic/GAN]")
    ] = None,
    metrics: Annotated[
        Path | None,
        _option("per-class acceptance JSON [default: metrics/synthesize/GAN.json; none with --exemplars]"),
    ] = None,
    exemplars: Annotated[
        Path | None,
        _option("unseen class: a folder of its example images (any size/mode); needs --label, --n, --out"),
    ] = None,
    label: Annotated[str | None, _option("name of the unseen class (with --exemplars)")] = None,
    generator_seed: Annotated[
        int, typer.Option(min=0, help="the generator replicate sampled (models/GAN/seedK by default)")
    ] = 0,
    n: Annotated[int | None, typer.Option(min=1, help="images to keep (with --exemplars)")] = None,
    prepared: Annotated[
        Path, _option("real training images (train.npz) for synthesize.filter.drop_near_copies")
    ] = layout.PREPARED,
    filter_mode: Annotated[
        str | None,
        _option(
            "the filter-sensitivity set: filter by this mode (none | argmax | threshold), "
            "filter_sensitivity.n_per_class per class, a shortfall recorded, not an error"
        ),
    ] = None,
) -> None:
    """Sample every class of a trained generator and keep the candidates that pass its filter rule
    (synthesize.filter.per_gan.GAN: argmax, threshold or none; --filter-mode overrides it).

    Writes OUT/CLASS/00000.png ... and OUT/index.csv (file, class, label, score) in acceptance order,
    replacing OUT whole. With --exemplars, OpenGAN draws one unseen class conditioned on the exemplars'
    embeddings instead. With synthesize.filter.drop_near_copies, candidates that nearly copy a real
    training image are dropped too (counted in the metrics JSON).
    """
    from cxraug.stages import synthesize as stage

    paths = stage.Paths(gan, models, out, metrics, prepared, exemplars, label, n, generator_seed, filter_mode)
    echo(stage.run(load(params), paths))


@app.command()
def classify(
    variant: Annotated[
        str,
        _option(
            "baseline | weighted_loss | oversample | standard_aug_N | GAN_N (bagan_N, opengan_N), "
            "N in synthesize.n_per_class | GAN_N_MODE (filter_sensitivity)"
        ),
    ],
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: Annotated[Path, _option("prepare's output (train/val/test.npz)")] = layout.PREPARED,
    synthetic: Annotated[Path, _option("synthesize's output (GAN/index.csv)")] = layout.SYNTHETIC,
    out_dir: Annotated[
        Path, _option("root under which models/, data/scores/, metrics/, plots/ are written")
    ] = Path("."),
) -> None:
    """Train VGG16 on one variant's training set for every seed (early stopping on val macro AUC), score
    the real test split once per seed, write per-class AUCs with patient-bootstrap CIs."""
    from cxraug.stages import classify as stage

    paths = replace(stage.Paths(variant=variant).under(out_dir), prepared=prepared, synthetic=synthetic)
    echo(stage.run(load(params), paths))


@app.command("gan-metrics")
def gan_metrics(
    gan: Annotated[
        str, _option("whose synthetic images: bagan | opengan | diffusion (cxraug.gans.registry)")
    ],
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = layout.PREPARED,
    synthetic: Annotated[Path, _option("data/synthetic/GAN/ (synthesize)")] = layout.SYNTHETIC,
    embedder: Annotated[Path, _option("feature space 'embedder'")] = layout.EMBEDDER,
    classifier: Annotated[
        Path, _option("feature space 'classifier' (its penultimate layer)")
    ] = layout.CLASSIFIERS / "baseline.pt",
    out: Annotated[Path, _option("directory of GAN/seedK.json")] = layout.GAN_METRICS,
    generator_seed: Annotated[int, typer.Option(min=0, help="the generator replicate evaluated")] = 0,
) -> None:
    """Generator quality and privacy: FD, KID, precision and recall per feature space against the held-out
    real val split, beside real train vs val (the floor), at equal set sizes, overall and per class (by
    torch-fidelity); the classification accuracy score (a classifier trained on synthetic images only,
    tested on the real test split); the memorisation audit (nearest real training image of every synthetic
    image, in pixels and features, against other patients' distances); degenerate spaces and class-blind
    generators flagged. Writes OUT/GAN.json."""
    from cxraug.stages import gan_metrics as stage

    paths = stage.Paths(
        gan, prepared, synthetic, embedder, classifier, out=out, generator_seed=generator_seed
    )
    echo(stage.run(load(params), paths))


@app.command()
def report(
    params: ParamsOption = DEFAULT_PARAMS,
    classify_metrics: Annotated[Path, _option("metrics/classify/VARIANT.json")] = layout.CLASSIFY_METRICS,
    scores: Annotated[Path, _option("data/scores/VARIANT.npz (test softmax per seed)")] = layout.SCORES,
    synthetic: Annotated[Path, _option("data/synthetic/GAN/ (for the image grids)")] = layout.SYNTHETIC,
    prepared: Annotated[Path, _option("data/prepared (real training images)")] = layout.PREPARED,
    out: Annotated[Path, _option("directory for results.md and figures/")] = layout.REPORTS,
    compare: Annotated[Path, _option("paired comparison vs baseline (JSON)")] = layout.COMPARE,
    gan_metrics: Annotated[Path, _option("metrics/gan/GAN/seedK.json (gan-metrics)")] = layout.GAN_METRICS,
    external_metrics: Annotated[
        Path, _option("metrics/external/NAME/VARIANT.json (external-test)")
    ] = layout.EXTERNAL_METRICS,
    train_bagan_metrics: Annotated[
        Path, _option("metrics/train_bagan/seedK.json (D on real val)")
    ] = layout.METRICS / "train_bagan",
    synthesize_metrics: Annotated[
        Path, _option("metrics/synthesize/GAN-filter-MODE/seedK.json (the filter-sensitivity row)")
    ] = layout.SYNTHESIZE_METRICS,
    external_scores: Annotated[
        Path, _option("data/scores/external/NAME/VARIANT.npz (external comparisons)")
    ] = layout.EXTERNAL_SCORES,
) -> None:
    """Tables laid out like the paper's (one per n in synthesize.n_per_class, with 95% CIs and the published
    values beside ours), a paired bootstrap of every variant vs baseline, and figures."""
    from cxraug.stages import report as stage

    paths = stage.Paths(
        classify_metrics,
        scores,
        synthetic,
        prepared,
        gan_metrics,
        out,
        compare,
        external_metrics,
        train_bagan_metrics,
        synthesize_metrics,
        external_scores,
    )
    echo(stage.run(load(params), paths))


@app.command("external-test")
def external_test(
    variant: Annotated[str, _option("the classifier variant to score (models/classifier/VARIANT.pt)")],
    data: Annotated[Path, _option("external set: NIH layout, class folders DIR/<class>/, or MedMNIST+ npz")],
    name: Annotated[str, _option("NAME of the external set: outputs go to .../external/NAME/VARIANT.*")],
    params: ParamsOption = DEFAULT_PARAMS,
    models: Annotated[Path, _option("classify's models (VARIANT.pt, every seed)")] = layout.CLASSIFIERS,
    prepared: PreparedOption = layout.PREPARED,
    classify_metrics: Annotated[
        Path, _option("classify's metrics (the run id to link)")
    ] = layout.CLASSIFY_METRICS,
    scores: Annotated[Path, _option("root of NAME/VARIANT.npz (scores per seed)")] = layout.EXTERNAL_SCORES,
    metrics: Annotated[Path, _option("root of NAME/VARIANT.json (AUCs, CIs)")] = layout.EXTERNAL_METRICS,
) -> None:
    """Score every seed of a trained variant on every single-label image of the study's classes in an
    external data set (all of it is test); per-class AUCs with patient- (or image-) bootstrap CIs."""
    from cxraug.stages import external_test as stage

    paths = stage.Paths(variant, name, data, models, prepared, classify_metrics, scores, metrics)
    echo(stage.run(load(params), paths))


@app.command()
def summary(
    params: ParamsOption = DEFAULT_PARAMS,
    metrics: Annotated[Path, _option("the stages' metrics JSON files (read)")] = layout.METRICS,
    out: Annotated[Path, _option("directory of the short per-stage rows (replaced)")] = layout.SUMMARY,
) -> None:
    """The few numbers per stage that `dvc metrics show` prints (images, steps, seconds, macro AUC with
    its CI, FD, near-copies), one small JSON per metrics file; the details stay in the metrics files."""
    from cxraug.stages import summary as stage

    echo(stage.run(load(params), stage.Paths(metrics, out)))
