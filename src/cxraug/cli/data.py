"""Verbs around the data: inspect, demo-data, download, params."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxraug.cli.options import (
    ParamsOption,
    app,
    download_app,
    load,
)
from cxraug.core.errors import CxraugError


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
        Path,
        typer.Argument(metavar="DATA_DIR", help="NIH layout directory or a MedMNIST+ chestmnist_<size>.npz"),
    ],
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Report a data directory's counts per class and images found/missing/unreadable; writes nothing."""
    from cxraug.core.config import DEFAULT_CLASSES
    from cxraug.data.inspect import format_report, inspect_source

    classes = load(params).prepare.classes if params.is_file() else DEFAULT_CLASSES
    typer.echo(format_report(inspect_source(data_dir), classes))


@app.command("demo-data")
def demo_data(
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="directory to create (NIH layout)")],
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
    out_dir: Annotated[
        Path, typer.Argument(metavar="OUT_DIR", help="data directory (images_NNN/images/ are created in it)")
    ],
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
    out_dir: Annotated[Path, typer.Argument(metavar="OUT_DIR", help="directory for chestmnist_<size>.npz")],
    size: Annotated[int, typer.Option(help="image side: 28, 64, 128 or 224")] = 64,
    mirror: Annotated[str | None, typer.Option(help="base URL holding the npz instead of Zenodo")] = None,
) -> None:
    """Download MedMNIST+ ChestMNIST (MD5 checked); `prepare` reads it like the NIH layout."""
    from cxraug.data.download import download_medmnist as run

    typer.echo(f"saved {run(out_dir, size, mirror=mirror)}")
