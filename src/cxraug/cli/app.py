"""The `cxraug` command: one verb per pipeline stage. Each verb parses its options, calls one function,
and prints a short summary; a user error is one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from cxraug.core.errors import CxraugError

# OpenMP worker threads that spin while waiting make torch 10-30x slower as soon as another process
# shares the cores (measured on 2 cores: a thin-VGG step 0.96 s spinning vs 0.08 s passive). Read once
# when torch loads, so it is set here, before any verb imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    help="Train class-conditional GANs (BAGAN, OpenGAN-style) on chest X-rays and measure, class by class, "
    "whether their images help a VGG16 classifier. Stages run under `dvc repro`; runs are tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings are paragraphs: their line breaks are not the terminal's
    pretty_exceptions_enable=False,
)
download_app = typer.Typer(
    help="Fetch public data sets (resumable, verified).", no_args_is_help=True, rich_markup_mode="markdown"
)
app.add_typer(download_app, name="download")
bench_app = typer.Typer(
    help="Measure throughput (images/s) of the pipeline's hot loops.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(bench_app, name="bench")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read settings from")]


def _params(path: Path):
    from cxraug.core.config import load_params

    return load_params(path)


def _main_process() -> bool:
    """False on torchrun ranks > 0: rank 0 alone reports what a stage wrote."""
    from cxraug.core import distributed
    return distributed.current().is_main


@app.command("params")
def show_params(
    params: ParamsOption = Path("params.yaml"),
    overlay: Annotated[
        list[Path] | None, typer.Option(help="YAML files whose keys replace params' keys")
    ] = None,
) -> None:
    """Validate params.yaml (plus overlays) and print every setting, defaults filled in, as YAML."""
    from cxraug.core.config import dump_params, load_params

    typer.echo(dump_params(load_params(params, *(overlay or []))), nl=False)


@app.command()
def inspect(
    data_dir: Annotated[
        Path, typer.Argument(help="NIH layout directory or a MedMNIST+ chestmnist_<size>.npz")
    ],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Report a data directory's counts per class and images found/missing/unreadable; writes nothing."""
    from cxraug.core.config import DEFAULT_CLASSES
    from cxraug.data.inspect import format_report, inspect_source

    classes = _params(params).prepare.classes if params.is_file() else DEFAULT_CLASSES
    typer.echo(format_report(inspect_source(data_dir), classes))


@app.command()
def prepare(
    params: ParamsOption = Path("params.yaml"),
    raw: Annotated[Path, typer.Option(help="raw data: NIH layout or MedMNIST+ npz")] = Path("data/raw"),
    out: Annotated[Path, typer.Option(help="directory for train/val/test.npz and split.csv")] = Path(
        "data/prepared"
    ),
    metrics: Annotated[Path, typer.Option(help="counts per class and split, skipped files")] = Path(
        "metrics/prepare.json"
    ),
) -> None:
    """Keep single-label images of the chosen classes, split them by patient, write uint8 arrays."""
    from cxraug.data.prepare import prepare as run_prepare

    result = run_prepare(_params(params).prepare, raw, out, metrics)
    per_split = ", ".join(f"{s} {sum(c.values()):,}" for s, c in result.counts.items())
    skipped = ", ".join(f"{k} {v:,}" for k, v in result.skipped.items() if v) or "none"
    typer.echo(
        f"prepared {result.images:,} images of {result.patients:,} patients ({per_split}) "
        f"in {result.seconds:.1f}s, {result.images_per_second:,.0f} img/s; skipped: {skipped}"
    )
    typer.echo(f"wrote {out}/{{train,val,test}}.npz, {out}/split.csv, {metrics}; MLflow run {result.run_id}")


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Argument(help="directory to create (NIH layout)")],
    n_images: Annotated[int, typer.Option(min=50, help="number of images")] = 2000,
    size: Annotated[int, typer.Option(min=32, help="side of the stored PNGs")] = 128,
    seed: Annotated[int, typer.Option(help="seed: the same seed gives the same files")] = 0,
    force: Annotated[bool, typer.Option(help="replace a non-empty directory")] = False,
) -> None:
    """Write a deterministic SYNTHETIC phantom data set in the NIH layout (a smoke fixture, not medicine)."""
    from cxraug.data.demo import make_demo_data

    counts = make_demo_data(out_dir, n_images=n_images, size=size, seed=seed, force=force)
    typer.echo(
        f"wrote {sum(counts.values()):,} synthetic phantom images to {out_dir}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    )


def _archive_list(text: str) -> list[int]:
    numbers: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            numbers += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise CxraugError(f"--archives '{text}': use numbers and ranges such as 1-12 or 1,3,5") from None
    return numbers


@download_app.command("nih")
def download_nih(
    out_dir: Annotated[Path, typer.Argument(help="data directory (images_NNN/images/ are created in it)")],
    archives: Annotated[str, typer.Option(help="which of the 12 archives, e.g. 1-12 or 1,2")] = "1-12",
    mirror: Annotated[
        str | None, typer.Option(help="base URL holding images_NNN.tar.gz instead of NIH")
    ] = None,
    keep_archives: Annotated[bool, typer.Option(help="keep the .tar.gz files after extraction")] = False,
) -> None:
    """Download NIH ChestX-ray14's image archives (~42 GB in all), resumable, and extract them."""
    from cxraug.data.download import NIH_PAGE
    from cxraug.data.download import download_nih as run

    n = run(out_dir, _archive_list(archives), mirror=mirror, keep_archives=keep_archives)
    typer.echo(f"extracted {n:,} files into {out_dir}")
    if not any(out_dir.glob("Data_Entry_2017*.csv*")):
        typer.echo(f"next: put Data_Entry_2017_v2020.csv from {NIH_PAGE} into {out_dir}")


@download_app.command("medmnist")
def download_medmnist(
    out_dir: Annotated[Path, typer.Argument(help="directory for chestmnist_<size>.npz")],
    size: Annotated[int, typer.Option(help="image side: 28, 64, 128 or 224")] = 64,
    mirror: Annotated[str | None, typer.Option(help="base URL holding the npz instead of Zenodo")] = None,
) -> None:
    """Download MedMNIST+ ChestMNIST (MD5 checked); `prepare` reads it like the NIH layout."""
    from cxraug.data.download import download_medmnist as run

    typer.echo(f"saved {run(out_dir, size, mirror=mirror)}")


@bench_app.command("prepare")
def bench_prepare(
    raw: Annotated[Path, typer.Option(help="NIH-layout directory to decode")] = Path("data/raw"),
    image_size: Annotated[int, typer.Option(help="output side")] = 64,
    limit: Annotated[int, typer.Option(help="decode at most this many files")] = 2000,
) -> None:
    """Images/s of prepare's decode + resize, single process and process pool."""
    from cxraug.benchmarks.common import markdown_table
    from cxraug.benchmarks.prepare import bench_prepare as run

    rows = run(raw, image_size, limit)
    typer.echo(markdown_table(rows, reference=rows[0]))


@app.command("train-bagan")
def train_bagan(
    params: ParamsOption = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepared splits (train.npz, val.npz)")] = Path(
        "data/prepared"
    ),
    out: Annotated[Path, typer.Option(help="directory for the models and class Gaussians")] = Path(
        "models/bagan"
    ),
    metrics: Annotated[Path, typer.Option(help="final metrics JSON")] = Path("metrics/train_bagan.json"),
    checkpoints: Annotated[Path, typer.Option(help="resumable training state")] = Path(
        "checkpoints/train_bagan"
    ),
) -> None:
    """Train BAGAN: an autoencoder on the real training images, a Gaussian per class over its latent
    codes, then a GAN whose generator starts as the decoder and whose discriminator has K+1 outputs.
    Interrupted? Run it again: it resumes from the last checkpoint, in the same MLflow run."""
    from cxraug.gans.bagan.train import train_bagan as run

    result = run(_params(params).train_bagan, prepared, out, metrics, checkpoints)
    if not _main_process():
        return
    m = result.metrics
    rates = ", ".join(
        f"{k.removesuffix('_steps_per_second')} {m[k]:.1f} steps/s"
        for k in ("ae_steps_per_second", "gan_steps_per_second")
        if k in m
    )
    typer.echo(
        f"trained BAGAN ({m['ae_steps']} autoencoder + {m['gan_steps']} GAN steps, {m['precision']}"
        f"{', ' + rates if rates else ''}) in {m['seconds']:.0f}s; D on val: "
        f"{m['val_d_acc_real']:.1%} correct class, {m['val_real_taken_as_fake']:.1%} taken as generated"
    )
    typer.echo(f"wrote {out}/, {metrics}; MLflow run {result.run_id}")


PreparedOption = Annotated[Path, typer.Option(help="directory of train/val/test.npz (the prepare stage)")]


@app.command("train-embedder")
def train_embedder(
    params: ParamsOption = Path("params.yaml"),
    prepared: PreparedOption = Path("data/prepared"),
    out: Annotated[Path, typer.Option(help="the frozen embedder")] = Path("models/embedder.pt"),
    metrics: Annotated[Path, typer.Option(help="val k-NN accuracy, recall@1, timings")] = Path(
        "metrics/train_embedder.json"
    ),
) -> None:
    """Train the metric-learning embedder (supervised contrastive) on the train split; report val k-NN."""
    from cxraug.gans.opengan.train_embedder import train_embedder as run

    result = run(_params(params).train_embedder, prepared, out, metrics)
    if not _main_process():
        return
    r = result.retrieval
    typer.echo(
        f"embedder: val k-NN accuracy {r.knn_accuracy:.3f} (balanced {r.knn_balanced_accuracy:.3f}, "
        f"majority class {r.majority_rate:.3f}), recall@1 {r.recall_at_1:.3f}; {result.steps} steps in "
        f"{result.seconds:.1f}s ({result.images_per_second:,.0f} img/s)"
    )
    typer.echo(f"wrote {out}, {metrics}; MLflow run {result.run_id}")


@app.command("train-opengan")
def train_opengan(
    params: ParamsOption = Path("params.yaml"),
    prepared: PreparedOption = Path("data/prepared"),
    embedder: Annotated[Path, typer.Option(help="frozen embedder (train-embedder)")] = Path(
        "models/embedder.pt"
    ),
    out: Annotated[Path, typer.Option(help="model directory (opengan.pt + embedder.pt)")] = Path(
        "models/opengan"
    ),
    metrics: Annotated[Path, typer.Option(help="losses, sample agreement, timings")] = Path(
        "metrics/train_opengan.json"
    ),
) -> None:
    """Train the OpenGAN-style GAN: G(z, e) with embedding-conditional batch norm, projection D(x, e)."""
    from cxraug.gans.opengan.train import train_opengan as run

    result = run(_params(params).train_opengan, prepared, embedder, out, metrics)
    if not _main_process():
        return
    agreement = ", ".join(f"{c} {v['prototype_accuracy']:.2f}" for c, v in result.summary["samples"].items())
    typer.echo(
        f"opengan: {result.steps} steps in {result.seconds:.1f}s ({result.steps_per_second:.2f} steps/s); "
        f"samples nearest their class prototype: {agreement}"
    )
    typer.echo(f"wrote {out}/, {metrics}; MLflow run {result.run_id}")


def _bench_params(params: Path, overlay: list[Path] | None):
    from cxraug.core.config import Params, load_params

    return load_params(params, *(overlay or [])) if params.is_file() else Params()


def _run_bench(
    components: tuple[str, ...], params: Path, overlay, smoke: bool, out: Path | None, images=None, steps=None
) -> None:
    from cxraug.benchmarks import suite

    report = suite.run(
        _bench_params(params, overlay), smoke=smoke, components=components, images=images, steps=steps
    )
    text = suite.markdown(report)
    typer.echo(text, nl=False)
    if out is not None:
        typer.echo(f"wrote {suite.write(report, out)}")


OverlayOption = Annotated[
    list[Path] | None, typer.Option(help="YAML files whose keys replace params' keys (params.demo.yaml)")
]
SmokeOption = Annotated[bool, typer.Option(help="tiny nets and data, seconds: checks the benchmark runs")]


@bench_app.command("all")
def bench_all(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    smoke: SmokeOption = False,
    out: Annotated[
        Path | None, typer.Option(help="markdown report [default: benchmarks/results/<host>.md]")
    ] = None,
    images: Annotated[
        int | None, typer.Option(min=100, help="demo phantoms [default 400]: longer BAGAN/classifier epochs")
    ] = None,
    steps: Annotated[
        int | None, typer.Option(min=2, help="embedder/OpenGAN steps per epoch and bare timed steps [4]")
    ] = None,
) -> None:
    """Every training loop (autoencoder, BAGAN, embedder, OpenGAN, classifier) and the data path: images/s,
    FLOP rate as a share of this machine's matmul peak, overhead of our machinery over a bare loop, GAN
    steps vs a dcgan-example-style loop at 64 px and 1024 px PNGs. About 5 min on 2 quiet CPU cores."""
    from cxraug.benchmarks.suite import COMPONENTS, default_output

    _run_bench(COMPONENTS, params, overlay, smoke, out or default_output(), images, steps)


@bench_app.command("bagan")
def bench_bagan(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    smoke: SmokeOption = False,
) -> None:
    """BAGAN's autoencoder and GAN steps: train_bagan vs a bare loop vs a dcgan-example-style loop."""
    _run_bench(("bagan",), params, overlay, smoke, None)


@bench_app.command("opengan")
def bench_opengan(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    smoke: SmokeOption = False,
) -> None:
    """The embedder step and the OpenGAN step: the stages vs bare loops vs a dcgan-example-style loop."""
    _run_bench(("embedder", "opengan"), params, overlay, smoke, None)


@bench_app.command("data")
def bench_data(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    smoke: SmokeOption = False,
) -> None:
    """Images/s of a training batch: uint8 split in memory (memory-mapped at 128 px) vs DataLoader over
    PNG files at the prepared size and at 1024 px."""
    _run_bench(("data",), params, overlay, smoke, None)


@bench_app.command("scale")
def bench_scale(
    counts: Annotated[str, typer.Option(help="data set sizes, comma-separated")] = "5000,10000,20000",
    image_size: Annotated[int, typer.Option(help="prepared side in px (in memory)")] = 64,
    mmap_size: Annotated[
        int, typer.Option(help="side of the extra memory-mapped run at the largest size; 0: none")
    ] = 128,
    out: Annotated[Path | None, typer.Option(help="markdown table (and .json next to it)")] = None,
) -> None:
    """Time and memory of prepare, load_split and an epoch of batches as the demo data set grows (each size
    in a fresh process): the per-image columns stay flat when growth is linear. ~3.5 min at 20k images
    on 2 busy cores."""
    from cxraug.benchmarks import scale
    from cxraug.core.runtime import atomic_write_json, atomic_write_text

    try:
        sizes = tuple(int(c) for c in counts.split(","))
    except ValueError:
        raise CxraugError(
            f"--counts {counts!r}: expected comma-separated integers, e.g. 5000,10000,20000"
        ) from None
    points = scale.run(sizes, image_size, mmap_size or None)
    text = scale.markdown(points)
    typer.echo(text, nl=False)
    if out is not None:
        atomic_write_json(out.with_suffix(".json"), scale.as_json(points))
        typer.echo(f"wrote {atomic_write_text(out, text)}")


@bench_app.command("precision")
def bench_precision(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    steps: Annotated[int, typer.Option(min=2, help="GAN steps in each precision")] = 20,
    out: Annotated[Path | None, typer.Option(help="markdown table")] = None,
) -> None:
    """BAGAN GAN steps in fp32 and in bf16 from the same weights, batches and latents: losses side by side,
    the image gap of the final generators, step times. On CPUs without native bf16 the bf16 run is slow:
    use small nets (--overlay params.demo.yaml) and few steps."""
    from cxraug.benchmarks import precision
    from cxraug.core.runtime import atomic_write_text

    text = precision.markdown(*precision.run(_bench_params(params, overlay), steps))
    typer.echo(text, nl=False)
    if out is not None:
        typer.echo(f"wrote {atomic_write_text(out, text)}")


@app.command()
def synthesize(
    gan: Annotated[str, typer.Option(help="which trained GAN samples: bagan | opengan")],
    params: ParamsOption = Path("params.yaml"),
    models: Annotated[
        Path | None, typer.Option(help="the trained GAN's directory [default: models/<gan>]")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="directory replaced by the PNGs + index.csv [default: data/synthetic/<gan>]"),
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option(
            help="per-class acceptance JSON [default: metrics/synthesize/<gan>.json; none with --exemplars]"
        ),
    ] = None,
    exemplars: Annotated[
        Path | None,
        typer.Option(
            help="unseen class: a folder of its example images (any size/mode); needs --label, --n, --out"
        ),
    ] = None,
    label: Annotated[str | None, typer.Option(help="name of the unseen class (with --exemplars)")] = None,
    n: Annotated[int | None, typer.Option(min=1, help="images to keep (with --exemplars)")] = None,
    prepared: Annotated[
        Path, typer.Option(help="real training images (train.npz) for synthesize.filter.drop_near_copies")
    ] = Path("data/prepared"),
) -> None:
    """Sample every class of a trained GAN and keep candidates it scores >= synthesize.filter.threshold
    (all of them for a GAN in synthesize.filter.unfiltered: OpenGAN by default).

    Writes <out>/<class>/<00000>.png and <out>/index.csv (file, class, label, score) in acceptance order,
    replacing <out> whole. With --exemplars, OpenGAN draws one unseen class conditioned on the exemplars'
    embeddings instead. With synthesize.filter.drop_near_copies, candidates that nearly copy a real
    training image are dropped too (counted in the metrics JSON).
    """
    from cxraug.synthesis import draw as synth
    settings = _params(params)
    if exemplars is None:
        if label is not None or n is not None:
            raise CxraugError("--label and --n describe an unseen class: give them with --exemplars DIR")
        result = synth.run_synthesize(
            settings.synthesize,
            gan,
            models or Path("models") / gan,
            out or Path("data/synthetic") / gan,
            metrics or Path("metrics/synthesize") / f"{gan}.json",
            train_metrics=Path("metrics") / f"train_{gan}.json",
            prepared=prepared,
        )
    else:
        if gan != "opengan":
            raise CxraugError("--exemplars needs --gan opengan (only OpenGAN conditions on embeddings)")
        if label is None or n is None or out is None:
            raise CxraugError("--exemplars needs --label NAME, --n N and --out DIR")
        result = synth.run_exemplars(
            settings.synthesize,
            models or Path("models/opengan"),
            exemplars,
            label,
            n,
            settings.prepare.image_size,
            out,
            metrics,
        )
    kept = ", ".join(f"{d.name} {d.accepted}/{d.wanted} ({d.acceptance_rate:.0%} pass)" for d in result.draws)
    typer.echo(
        f"kept {result.accepted:,} of {result.tried:,} candidates in {result.seconds:.1f}s "
        f"({result.candidates_per_second:,.0f}/s): {kept}"
    )
    typer.echo(f"wrote {result.out_dir}; MLflow run {result.run_id}")


@app.command()
def report(
    params: ParamsOption = Path("params.yaml"),
    classify_metrics: Annotated[Path, typer.Option(help="metrics/classify/<variant>.json")] = Path(
        "metrics/classify"
    ),
    scores: Annotated[Path, typer.Option(help="data/scores/<variant>.npz (test softmax per seed)")] = Path(
        "data/scores"
    ),
    synthetic: Annotated[Path, typer.Option(help="data/synthetic/<gan>/ (for the image grids)")] = Path(
        "data/synthetic"
    ),
    prepared: Annotated[Path, typer.Option(help="data/prepared (real training images)")] = Path(
        "data/prepared"
    ),
    out: Annotated[Path, typer.Option(help="directory for results.md and figures/")] = Path("reports"),
    compare: Annotated[Path, typer.Option(help="paired comparison vs baseline (JSON)")] = Path(
        "metrics/compare.json"
    ),
    gan_metrics: Annotated[Path, typer.Option(help="metrics/gan/<gan>.json (gan-metrics)")] = Path(
        "metrics/gan"
    ),
) -> None:
    """Tables laid out like the paper's (one per n in synthesize.n_per_class, with 95% CIs and the published
    values beside ours), a paired bootstrap of every variant vs baseline, and figures."""
    from cxraug.report.build import Inputs, make_report

    settings = _params(params)
    inputs = Inputs(classify_metrics, scores, synthetic, prepared, gan_metrics)
    result = make_report(settings.report, settings.synthesize.n_per_class, inputs, out, compare)
    typer.echo(
        f"wrote {result.markdown} and {len(result.figures)} figures in {out / 'figures'}, {compare}; "
        f"{len(result.present)} variants reported"
        + (f", missing: {', '.join(result.missing)}" if result.missing else "")
    )


@bench_app.command("synthesize")
def bench_synthesize(
    n: Annotated[int, typer.Option(help="images kept per class")] = 3000,
    classes: Annotated[int, typer.Option(help="number of classes")] = 5,
    size: Annotated[int, typer.Option(help="image side")] = 64,
    workdir: Annotated[
        Path | None,
        typer.Option(help="where to write (the file system sets the PNG rate) [default: $TMPDIR]"),
    ] = None,
) -> None:
    """Images/s of synthesize's own work: the filter loop, writing PNGs + index, reading them back."""
    from cxraug.benchmarks.common import markdown_table
    from cxraug.benchmarks.synthesize import bench_synthesize as run

    typer.echo(markdown_table(run(n, classes, size, workdir)))


@app.command()
def classify(
    variant: Annotated[
        str,
        typer.Option(
            help="baseline | weighted_loss | oversample | standard_aug_<n> | bagan_<n> | opengan_<n>, "
            "n in synthesize.n_per_class"
        ),
    ],
    params: ParamsOption = Path("params.yaml"),
    prepared: Annotated[Path, typer.Option(help="prepare's output (train/val/test.npz)")] = Path(
        "data/prepared"
    ),
    synthetic: Annotated[Path, typer.Option(help="synthesize's output (<gan>/index.csv)")] = Path(
        "data/synthetic"
    ),
    out_dir: Annotated[
        Path, typer.Option(help="root under which models/, data/scores/, metrics/, plots/ are written")
    ] = Path("."),
) -> None:
    """Train VGG16 on one variant's training set for every seed (early stopping on val macro AUC), score
    the real test split once per seed, write per-class AUCs with patient-bootstrap CIs."""
    from dataclasses import replace

    from cxraug.stages.classify import Paths, run_classify

    paths = replace(Paths().under(out_dir), prepared=prepared, synthetic=synthetic)
    result = run_classify(variant, _params(params), paths)
    if not _main_process():
        return
    m = result.metrics
    per_class = ", ".join(f"{c} {a:.3f}" for c, a in m["per_class_auc"].items())
    typer.echo(
        f"{result.variant}: test macro AUC {m['macro_auc']:.3f} "
        f"[{m['macro_auc_ci'][0]:.3f}, {m['macro_auc_ci'][1]:.3f}] over seeds {m['seeds']} "
        f"(best epochs {list(m['best_epoch'].values())}) in {result.seconds:.0f}s; {per_class}"
    )
    typer.echo(f"wrote {', '.join(map(str, result.outputs))}; MLflow run {result.run_id}")


@bench_app.command("classify")
def bench_classify(
    width: Annotated[float, typer.Option(help="channel multiplier (1 = VGG16)")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="images per step")] = 64,
    image_size: Annotated[int, typer.Option(help="input side")] = 64,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Images/s of a VGG16 training step: fp32 vs bf16, channels_last on/off, pooled vs classic head."""
    from cxraug.benchmarks.classify import bench_classify as run
    from cxraug.benchmarks.common import markdown_table

    rows = run(width=width, batch_size=batch_size, image_size=image_size, device=device)
    typer.echo(markdown_table(rows, reference=rows[0]))


@app.command("gan-metrics")
def gan_metrics(
    gan: Annotated[str, typer.Option(help="whose synthetic images: bagan | opengan")],
    params: ParamsOption = Path("params.yaml"),
    prepared: PreparedOption = Path("data/prepared"),
    synthetic: Annotated[Path, typer.Option(help="data/synthetic/<gan>/ (synthesize)")] = Path(
        "data/synthetic"
    ),
    embedder: Annotated[Path, typer.Option(help="feature space 'embedder'")] = Path("models/embedder.pt"),
    classifier: Annotated[
        Path, typer.Option(help="feature space 'classifier' (its penultimate layer)")
    ] = Path("models/classifier/baseline.pt"),
    out: Annotated[Path, typer.Option(help="directory of <gan>.json")] = Path("metrics/gan"),
) -> None:
    """GAN quality and privacy against the real training split: FD, KID, precision and recall per feature
    space (overall and per class, by torch-fidelity), the classification accuracy score (a classifier
    trained on synthetic images only, tested on the real test split) and the memorisation audit (nearest
    real training image of every synthetic image, in pixels and features). Writes <out>/<gan>.json."""
    from cxraug.stages.gan_metrics import GanMetricsPaths, run_gan_metrics

    paths = GanMetricsPaths(
        prepared=prepared, synthetic=synthetic, embedder=embedder, classifier=classifier, out=out
    )
    result = run_gan_metrics(_params(params), gan, paths)
    m = result.metrics
    overall = m["fidelity"]["overall"]
    figures = ", ".join(
        f"{k} {v:.4g}" for k, v in overall.items() if k.split("_")[0] in ("fd", "fid", "precision", "recall")
    )
    typer.echo(f"{gan}: overall {figures or 'no fidelity figure (too few images)'}")
    pixel, feature = m["memorisation"]["pixel"], m["memorisation"]["feature"]
    typer.echo(
        f"near-copies: {pixel['copy_fraction']:.1%} in pixels, {feature['copy_fraction']:.1%} in "
        f"{feature['space']} features (threshold {m['memorisation']['copy_threshold']:g} x real NN median)"
        + (f"; CAS macro AUC {m['cas']['macro_auc']:.3f}" if m["cas"] else "")
        + (f"; {m['skipped']['count']} metric(s) skipped (too few images)" if m["skipped"]["count"] else "")
    )
    typer.echo(f"wrote {result.path} in {result.seconds:.0f}s; MLflow run {result.run_id}")


@bench_app.command("gan-metrics")
def bench_gan_metrics(
    synthetic: Annotated[int, typer.Option(help="synthetic images")] = 1500,
    real: Annotated[int, typer.Option(help="real training images")] = 1000,
    size: Annotated[int, typer.Option(help="image side")] = 64,
    vgg_width: Annotated[float, typer.Option(help="width of the classifier extractor (1 = VGG16)")] = 1.0,
) -> None:
    """Images/s of gan_metrics' parts: torch-fidelity feature extraction with our extractors, FD/KID/PR on
    the features, and the memorisation audit's nearest-neighbour search (vs torch.cdist)."""
    from cxraug.benchmarks.common import markdown_table
    from cxraug.benchmarks.gan_metrics import bench_gan_metrics as run

    typer.echo(markdown_table(run(synthetic, real, size, vgg_width)))


@app.command()
def tune(
    gan: Annotated[str, typer.Option(help="which GAN's learning rates to tune: bagan | opengan")],
    n_trials: Annotated[
        int, typer.Option(min=1, help="trials THIS worker runs (each worker adds its own)")
    ] = 10,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="start no new trial after this many seconds")
    ] = None,
    storage: Annotated[
        str,
        typer.Option(
            help="Optuna storage the workers share: an RDB URL (sqlite:///..., postgresql://user:pw@host/db) "
            "or a journal file on a shared file system (journal:PATH, or PATH.log)"
        ),
    ] = "sqlite:///mlruns/optuna.db",
    study_name: Annotated[
        str | None, typer.Option(help="workers with the same name and storage share one study [default: GAN]")
    ] = None,
    max_trials: Annotated[
        int | None,
        typer.Option(
            min=1, help="stop once the study holds this many complete + pruned trials (all workers)"
        ),
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    prepared: PreparedOption = Path("data/prepared"),
    out: Annotated[Path, typer.Option(help="directory for best_<gan>.yaml and the embedder cache")] = Path(
        "tuning"
    ),
) -> None:
    """Optuna search over the GAN's learning rates (lr_g, lr_d; BAGAN also lr_ae) and the synthetic images
    per class (0 included), ranges in params.yaml `tune.search`. A trial trains the GAN on the short
    schedule of `tune.overrides`, adds its filtered images to the real TRAIN split and scores a short
    classifier on VAL (never test); MedianPruner stops weak trials early. One MLflow parent run per study,
    a nested run per trial. Start the same command on several machines with a shared --storage to add
    workers; rerun it to continue an interrupted study."""
    from cxraug.tune.worker import tune as run

    result = run(
        gan,
        _params(params),
        prepared,
        storage=storage,
        study_name=study_name,
        n_trials=n_trials,
        timeout=timeout,
        max_trials=max_trials,
        out_dir=out,
    )
    c, s = result.counts, result.study_counts
    per_trial = f", {result.seconds_per_trial:.0f} s per trial" if result.seconds_per_trial else ""
    typer.echo(
        f"study '{result.study_name}' ({result.storage}): this worker ran {len(result.trials)} trials "
        f"({c['complete']} complete, {c['pruned']} pruned, {c['fail']} failed) in {result.seconds:.0f} s"
        f"{per_trial}; the study holds {sum(s.values())} ({s['complete']} complete, {s['running']} running)"
    )
    if result.best is not None:
        typer.echo(f"best: {_describe_trial(result.best)}")
    choice = result.choice
    if choice is not None:
        typer.echo(f"wrote {choice.path}; MLflow study run {result.parent_run_id}")
        if choice.with_gan is not None and choice.with_gan.number != result.best.number:
            typer.echo(f"best with synthetic images: {_describe_trial(choice.with_gan)}")
        if choice.beats_real_only is False:
            typer.echo("warning: no GAN setting beat the real-only classifier on the short schedule")
        typer.echo(
            f"apply it: {choice.command}" if choice.command else "no complete trial used synthetic images yet"
        )
    if result.stopped:
        raise CxraugError(f"worker stopped: {result.stopped}")


def _describe_trial(trial) -> str:
    shown = (f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    chosen = ", ".join(shown)
    return f"trial {trial.number}, val macro AUC {trial.value:.4f} ({chosen})"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("mlflow", "alembic", "urllib3", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except CxraugError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo(
            "interrupted: finished outputs and the last checkpoint are kept; rerun to resume", err=True
        )
        sys.exit(130)
    finally:
        if "cxraug.core.distributed" in sys.modules:  # leave a torchrun process group cleanly
            sys.modules["cxraug.core.distributed"].cleanup()


if __name__ == "__main__":
    main()
