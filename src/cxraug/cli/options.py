"""The typer apps and what every verb module shares: the params option, loading params, printing a
stage's result. Verbs import what they run when they run, so `cxraug --help` starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Train class-conditional GANs (BAGAN, OpenGAN-style) on chest X-rays and measure, class by class, "
    "whether their images help a VGG16 classifier. Stages run under `dvc repro`; runs are tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: placeholders survive and flags show no type
    pretty_exceptions_enable=False,
)


download_app = typer.Typer(help="Fetch public data sets (resumable, verified).", no_args_is_help=True)


app.add_typer(download_app, name="download")


bench_app = typer.Typer(
    help="Measure throughput (images/s) of the pipeline's hot loops.",
    no_args_is_help=True,
)


app.add_typer(bench_app, name="bench")


ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read settings from")]
DEFAULT_PARAMS = Path("params.yaml")


def load(path: Path):
    from cxraug.core.config import load_params

    return load_params(path)


def main_process() -> bool:
    """False on torchrun ranks > 0: rank 0 alone reports what a stage wrote."""
    from cxraug.core import distributed

    return distributed.current().is_main


PreparedOption = Annotated[Path, typer.Option(help="directory of train/val/test.npz (the prepare stage)")]


def echo(result) -> None:
    """A stage's StageResult, the same way for every stage; nothing on torchrun ranks > 0."""
    if not main_process():
        return
    for line in result.lines():
        typer.echo(line)
