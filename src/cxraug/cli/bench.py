"""`cxraug bench ...`: the benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxraug.cli.options import (
    ParamsOption,
    bench_app,
)
from cxraug.core.errors import CxraugError


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
        int | None, typer.Option(min=100, help="demo phantoms [default 1600]: longer BAGAN/classifier epochs")
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(min=2, help="stage steps per epoch (2 epochs, each step paired with a bare one) [20]"),
    ] = None,
    skip: Annotated[
        list[str] | None,
        typer.Option(help="leave out a part: bagan, embedder, opengan, classifier, diffusion or data"),
    ] = None,
) -> None:
    """Every training loop (autoencoder, BAGAN, embedder, OpenGAN, classifier, diffusion) and the data path:
    images/s, FLOP rate as a share of this machine's matmul peak, overhead of our machinery over a bare
    loop, GAN steps vs a dcgan-example-style loop at 64 px and 1024 px PNGs. The overhead column interleaves
    ours and bare step by step (the steps either side of an epoch end left out): median ratio, 95%
    bootstrap interval, met / not met / unresolved against 5%. Measured on 2 quiet CPU cores at
    params.yaml's nets: 9 min with --skip diffusion (35-41 pairs per row, intervals 1-3.5 points wide);
    the diffusion loop (5 steps per epoch unless --steps) adds ~10-25 min."""
    from cxraug.benchmarks.suite import COMPONENTS, default_output

    unknown = sorted(set(skip or ()) - set(COMPONENTS))
    if unknown:
        raise CxraugError(
            f"bench all --skip: unknown part {', '.join(unknown)}; parts: {', '.join(COMPONENTS)}"
        )
    components = tuple(c for c in COMPONENTS if c not in (skip or ()))
    _run_bench(components, params, overlay, smoke, out or default_output(), images, steps)


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


@bench_app.command("diffusion")
def bench_diffusion(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    smoke: SmokeOption = False,
) -> None:
    """The diffusion model's training step (train_diffusion vs a bare loop) and its sampler (the
    Proposer's guided batches vs a plain loop of U-Net calls and scheduler steps): img/s, FLOP share."""
    _run_bench(("diffusion",), params, overlay, smoke, None)


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


@bench_app.command("compile")
def bench_compile(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    pairs: Annotated[int, typer.Option(min=4, help="interleaved (compiled, eager) step pairs per loop")] = 12,
) -> None:
    """torch.compile vs eager for the classifier step and BAGAN's GAN step at params' nets, from the same
    weights, interleaved: median ratio, 95% bootstrap interval, faster / slower / unresolved, and the
    first compiled step's seconds. Compiling needs a C compiler on CPU; ~5 min at params.yaml's nets on 2
    quiet cores."""
    from cxraug.benchmarks import compiled
    from cxraug.core.runtime import pick_device, pick_precision

    p = _bench_params(params, overlay)
    precision = pick_precision(pick_device(p.classify.device), p.classify.precision)
    typer.echo(compiled.markdown(compiled.run(p, pairs), precision.describe()), nl=False)


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


@bench_app.command("study")
def bench_study(
    params: ParamsOption = Path("params.yaml"),
    overlay: OverlayOption = None,
    quick: Annotated[
        bool, typer.Option(help="tiny nets (bench --smoke's), 300 phantoms, 3 steps: checks the verb runs")
    ] = False,
    steps: Annotated[int, typer.Option(min=3, help="steps timed per training loop")] = 6,
    sample: Annotated[
        int | None,
        typer.Option(min=1, help="candidates per class timed per generator [synthesize.batch_size]"),
    ] = None,
    train_images: Annotated[
        int | None, typer.Option(min=1, help="planned train split [full NIH at prepare's classes and cap]")
    ] = None,
    val_images: Annotated[int | None, typer.Option(min=1, help="planned val split [as above]")] = None,
    test_images: Annotated[int | None, typer.Option(min=1, help="planned test split [as above]")] = None,
    out: Annotated[Path | None, typer.Option(help="markdown report (and .json next to it)")] = None,
) -> None:
    """Projected wall time of the whole `dvc repro` on this device: step rates of every generator, the
    embedder and the classifier measured with params' nets (and synthesis img/s), times the work params
    plans (generators x replicates, variants x seeds x budget, ...); a table of every part and the total.
    About 10 min on 2 CPU cores at full size."""
    import dataclasses

    from cxraug.benchmarks import plan, study, suite
    from cxraug.core.runtime import atomic_write_json, atomic_write_text

    p = _bench_params(params, overlay)
    nih = plan.Sizes.nih(p) if None in (train_images, val_images, test_images) else None
    sizes = plan.Sizes(train_images or nih.train, val_images or nih.val, test_images or nih.test)
    if quick:
        p, steps, sample = suite.smoke_params(p), 3, sample or 8

    def show(key: str, rate: study.Rate) -> None:
        typer.echo(f"measured {key}: {rate.images_per_second:,.1f} img/s ({rate.note})", err=True)

    result = study.run(p, sizes, steps=steps, sample=sample, n_images=300 if quick else 400, on_rate=show)
    text = study.markdown(result)
    typer.echo(text, nl=False)
    if out is not None:
        data = {
            "machine": result.machine,
            "load_average": list(result.load),
            "sizes": dataclasses.asdict(result.sizes),
            "rates": {k: dataclasses.asdict(r) for k, r in result.rates.items()},
            "parts": [
                {**dataclasses.asdict(x.work), "rate_images_per_second": x.rate, "seconds": x.seconds}
                for x in result.parts
            ],
            "total_seconds": plan.total(result.parts),
        }
        atomic_write_json(out.with_suffix(".json"), data)
        typer.echo(f"wrote {atomic_write_text(out, text)}")
