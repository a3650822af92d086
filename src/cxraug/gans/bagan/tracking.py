"""Everything BAGAN training sends to MLflow, in one class (so that under DDP only rank 0 makes one).

Step metrics go through a MetricBuffer as means over `log_every` steps; epoch metrics and image grids are
logged with the epoch as their step, so MLflow's image slider shows progress epoch by epoch. The sliders
start at step 0 (before training), where MLflow's image card opens; the last epoch's grid is logged again
under its own `.../final` key, a one-step card that opens on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cxraug.core import tracking
from cxraug.core.distributed import SINGLE, Context
from cxraug.core.runtime import slug
from cxraug.core.training import StepWindow
from cxraug.gans.bagan.latent import ClassGaussians


class BaganTracker:
    """Every rank keeps one (step metrics are averaged over ranks, a collective); only rank 0's logs."""

    def __init__(self, classes: tuple[str, ...], log_every: int, ctx: Context = SINGLE) -> None:
        self.classes = classes
        self.log_every = log_every
        self.ctx = ctx
        self.buffer = tracking.MetricBuffer()
        self.window = StepWindow(ctx, self.buffer, log_every)

    def step(self, metrics: dict[str, torch.Tensor], step: int) -> dict[str, float] | None:
        """Collect one step's metrics (device tensors: no sync); every log_every steps log their means
        (over steps and ranks) and return them (for the progress bar)."""
        return self.window.add(metrics, step)

    def scalars(self, metrics: dict[str, float], step: int) -> None:
        self.buffer.log(metrics, step)
        self.buffer.flush()

    def flush(self) -> None:
        self.buffer.flush()

    def reconstructions(
        self, inputs: torch.Tensor, reconstructions: torch.Tensor, epoch: int, of: int
    ) -> None:
        """A row per class: real training images of the class, then their reconstructions (one row, not
        two, so the square card keeps its images large)."""
        per_class = len(inputs) // len(self.classes)
        rows, labels = [], []
        for c, name in enumerate(self.classes):
            block = slice(c * per_class, (c + 1) * per_class)
            rows.append(torch.cat([inputs[block].cpu(), reconstructions[block].cpu().to(inputs.dtype)]))
            labels.append(f"{name}: {per_class} real, then decoded")
        title = f"autoencoder reconstructions, {_epoch(epoch, of)}"
        self._log(rows, labels, title, "autoencoder/reconstructions", epoch, of)

    def samples(self, images: torch.Tensor, epoch: int, of: int) -> None:
        """A row per class of images generated from the same fixed latents every epoch."""
        rows = list(images.cpu().chunk(len(self.classes)))
        self._log(rows, self.classes, f"BAGAN samples, {_epoch(epoch, of)}", "samples/by_class", epoch, of)

    def _log(self, rows, labels, title: str, key: str, epoch: int, of: int) -> None:
        tracking.log_labelled_grid(rows, labels, title, key=key, step=epoch)
        if epoch == of:
            tracking.log_labelled_grid(rows, labels, title, key=f"{key}/final", step=epoch)

    def gaussians(
        self, gaussians: ClassGaussians, latents: np.ndarray, labels: np.ndarray, path: Path
    ) -> None:
        import mlflow

        metrics = {}
        for c, name in enumerate(self.classes):
            cov = gaussians.covariances[c]
            metrics[f"latent/{slug(name)}/images"] = float(gaussians.counts[c])
            metrics[f"latent/{slug(name)}/mean_variance"] = float(np.trace(cov) / len(cov))
            metrics[f"latent/{slug(name)}/min_eigenvalue"] = float(np.linalg.eigvalsh(cov)[0])
        mlflow.log_metrics(metrics)
        mlflow.log_artifact(str(path), artifact_path="latent")
        mlflow.log_figure(latent_figure(latents, labels, gaussians), "latent/pca.png")

    def outputs(self, out_dir: Path) -> None:
        """The stage's output directory (models, Gaussians, final grid) as the run's artifacts."""
        import mlflow

        self.flush()
        mlflow.log_artifacts(str(out_dir), artifact_path="bagan")

    def final(self, metrics: dict) -> None:
        import mlflow

        scalars = {f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        for key in ("d_val_auc", "d_val_recall", "d_val_argmax_pass"):  # D on real val, per class
            scalars |= {f"final/{key}/{slug(c)}": float(v) for c, v in metrics.get(key, {}).items()}
        mlflow.log_metrics(scalars)


def _epoch(epoch: int, of: int) -> str:
    return f"epoch {epoch} of {of}" if epoch else f"before training (0 of {of} epochs)"


def latent_figure(latents: np.ndarray, labels: np.ndarray, gaussians: ClassGaussians):
    """The training images' codes projected on their first two principal axes, with each class's mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    center = latents.mean(axis=0)
    _, _, axes = np.linalg.svd(latents - center, full_matrices=False)
    project = lambda x: (x - center) @ axes[:2].T  # noqa: E731
    fig, ax = plt.subplots(figsize=(6, 5))
    for c, name in enumerate(gaussians.classes):
        points = project(latents[labels == c])
        color = f"C{c}"
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.5, color=color, label=f"{name} ({len(points)})")
        mean = project(gaussians.means[c][None])[0]
        ax.scatter(*mean, marker="X", s=120, color=color, edgecolor="black")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("encoder codes of the training images (X: class means)")
    ax.legend(fontsize=8, markerscale=2)
    fig.tight_layout()
    plt.close(fig)
    return fig
