"""MLflow side of the synthesize stage: acceptance metrics, score histograms, image grids, and the link
to the run that trained the GAN."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cxraug.core import tracking
from cxraug.core.config import SynthesizeParams
from cxraug.core.runtime import Precision, slug
from cxraug.synthesis.draw import ClassDraw, SynthesizeResult


def training_run_id(model_dir: Path, train_metrics: Path | None = None) -> str | None:
    """The MLflow run that trained the model: from a JSON file of the model directory that records it,
    else from the training stage's metrics file (metrics/train_<gan>.json)."""
    candidates = sorted(Path(model_dir).glob("*.json")) + ([Path(train_metrics)] if train_metrics else [])
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("mlflow_run_id"), str):
            return data["mlflow_run_id"]
    return None


def score_histograms(draws: list[ClassDraw]):
    """One panel per class: candidate scores that passed vs were rejected by the rule (and the threshold)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(draws), 2.8), layout="constrained")
    bins = np.linspace(0, 1, 41)
    for ax, d in zip(fig.subplots(1, len(draws), squeeze=False)[0], draws, strict=True):
        s = d.candidate_scores.numpy()
        passed = d.candidate_passed.numpy() if d.candidate_passed is not None else s >= d.threshold
        ax.hist(s[passed], bins=bins, color="tab:green", label="passed")
        ax.hist(s[~passed], bins=bins, color="tab:red", alpha=0.7, label="rejected")
        if d.threshold == d.threshold:  # a threshold rule: draw its cut-off
            ax.axvline(d.threshold, color="k", linestyle="--", linewidth=1)
        ax.set_title(
            f"{d.name} ({d.rule})\n{d.accepted}/{d.wanted} kept, {d.acceptance_rate:.0%} pass", fontsize=9
        )
        ax.set_xlabel("score")
    fig.axes[0].set_ylabel("candidates")
    fig.axes[0].legend(fontsize=8)
    return fig


def log_to_mlflow(
    result: SynthesizeResult,
    params: SynthesizeParams,
    stage: str,
    gan: str,
    model_dir: Path,
    gan_run: str | None,
    precision: Precision,
    extra_tags: dict[str, str],
) -> str:
    import mlflow

    tags = {"gan": gan, "gan.run_id": gan_run or "unknown", "precision": precision.describe(), **extra_tags}
    with tracking.stage_run(
        experiment="synthesize", stage=stage, params=params, inputs=[model_dir], extra_tags=tags
    ) as run_id:
        metrics = {"seconds": result.seconds, "candidates_per_second": result.candidates_per_second}
        for d in result.draws:
            s = slug(d.name)
            metrics |= {
                f"accepted.{s}": d.accepted,
                f"tried.{s}": d.tried,
                f"acceptance_rate.{s}": d.acceptance_rate,
                f"shortfall.{s}": d.shortfall,
            }
            if d.accepted:
                metrics[f"mean_score.{s}"] = float(d.scores.mean())
                tracking.log_grid(d.images[:64], key=f"accepted/{s}")
            if len(d.rejected):
                tracking.log_grid(d.rejected, key=f"rejected/{s}")
            if d.near_copies is not None:
                metrics[f"near_copies.{s}"] = d.near_copies
                if len(d.copies):
                    tracking.log_grid(d.copies, key=f"near_copies/{s}")
        mlflow.log_metrics(metrics)
        mlflow.log_figure(score_histograms(result.draws), "score_histograms.png")
        if (result.out_dir / "index.csv").is_file():
            mlflow.log_artifact(str(result.out_dir / "index.csv"))
    return run_id
