"""`cxraug tune`: Optuna searches."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cxraug.cli.options import (
    ParamsOption,
    PreparedOption,
    app,
    load,
)
from cxraug.core.errors import CxraugError


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
        load(params),
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
