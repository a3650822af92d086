"""The report's figures: per-class AUC with CIs, ROC curves, real vs synthetic images, training sets.

Built on matplotlib's object API (`Figure`, no pyplot state), one function per figure, each returning the
figure so tests and notebooks can use them without writing files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from cxraug.core.config import ReportParams
from cxraug.core.tracking import to_uint8_grid
from cxraug.data.datasets import Split
from cxraug.report.gan import precision_recall_figure
from cxraug.report.inputs import TestScores, VariantMetrics, family, label, table_variants
from cxraug.report.paper import paper_auc
from cxraug.synthesis.files import read_png

COLORS = {
    "baseline": "0.45",
    "standard_aug": "tab:blue",
    "bagan": "tab:orange",
    "opengan": "tab:green",
    "weighted_loss": "tab:purple",
    "oversample": "tab:brown",
}


def color(variant: str) -> str:
    return COLORS.get(family(variant), "tab:gray")


def auc_bars(
    n: int,
    metrics: dict[str, VariantMetrics],
    classes: tuple[str, ...],
    generators: Sequence[str] | None = None,
) -> Figure:
    """Grouped bars per class (and macro): mean AUC over seeds with its 95% CI; the paper's values as
    black ticks on the bars they correspond to; missing variants named in the legend."""
    rows = (*classes, VariantMetrics.MACRO)
    variants = table_variants(n, generators)
    fig = Figure(figsize=(1.9 * len(rows) + 2.5, 4.2), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(variants)
    x = np.arange(len(rows))
    lows, handles = [], []
    for i, v in enumerate(variants):
        pos = x - 0.4 + width * (i + 0.5)
        published = [paper_auc(n, family(v), r) for r in rows]
        shown = [(p, value) for p, value in zip(pos, published, strict=True) if value is not None]
        if shown:  # the published value marks where our bar is (or would be)
            ax.scatter(*zip(*shown, strict=True), marker="_", s=140, color="black", zorder=3)
            lows.append(min(value for _, value in shown))
        if v not in metrics:
            handles.append(
                Patch(facecolor="white", edgecolor=color(v), hatch="//", label=f"{label(v)} (missing)")
            )
            continue
        m = metrics[v]
        mean = np.array([m.mean[r] for r in rows])
        lo, hi = np.array([[m.ci[r][0], m.ci[r][1]] for r in rows]).T
        lows.append(lo.min())
        handles.append(ax.bar(pos, mean, width, color=color(v), label=label(v)))
        ax.errorbar(pos, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="black", capsize=2, lw=0.8)
    if any(paper_auc(n, family(v), r) is not None for v in variants for r in rows):
        handles.append(
            Line2D([], [], marker="_", markersize=12, color="black", linestyle="none", label="paper")
        )
    handles.append(ax.axhline(0.5, color="0.35", ls="--", lw=1, label="chance (AUC 0.5)"))
    ax.set_xticks(x, rows)
    ax.set_xlabel("class (macro: mean over classes)")
    ax.set_ylabel("test AUC (mean over seeds)")
    ax.set_ylim(max(0.0, min(0.45, min(lows, default=0.5) - 0.05)), 1.0)  # the chance line stays in view
    ax.set_title(f"Per-class AUC with 95% CI, {n:,} images added per class")
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def roc_curves(
    n: int,
    scores: dict[str, TestScores],
    classes: tuple[str, ...],
    generators: Sequence[str] | None = None,
) -> Figure:
    """One panel per class (three to a row, so the figure fits a window), one curve per variant from the
    seed-mean test softmax; each legend gives the AUC the tables give (the mean of the seeds' AUCs)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    cols = min(3, len(classes))
    rows = -(-len(classes) // cols)
    fig = Figure(figsize=(3.3 * cols, 4.1 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(classes) :]:
        ax.set_axis_off()
    for k, (ax, name) in enumerate(zip(axes, classes, strict=False)):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.8, ls="--", label="chance (AUC 0.5)")
        for v in table_variants(n, generators):
            if v not in scores:
                continue
            s = scores[v]
            positive = s.labels == k
            fpr, tpr, _ = roc_curve(positive, s.seed_mean[:, k])
            auc = float(np.mean([roc_auc_score(positive, seed[:, k]) for seed in s.scores]))
            ax.plot(fpr, tpr, color=color(v), lw=1.2, label=f"{label(v)}: AUC {auc:.3f}")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.suptitle(
        f"ROC on the test split, {n:,} images added per class (curves: seed-mean scores; "
        "AUC: mean of the seeds' AUCs, as in the tables)",
        fontsize=9,
    )
    return fig


def real_vs_synthetic(
    train: Split, synthetic_dir: Path, indexes: dict[str, pd.DataFrame], per_cell: int, seed: int
) -> Figure:
    """Rows = classes; columns = a random sample of real training images, then the first accepted images
    of each GAN (the ones a variant trains on first)."""

    sources = ["real (train)", *indexes]
    rng = np.random.default_rng(seed)
    fig = Figure(
        figsize=(1.1 * per_cell * len(sources), 1.25 * len(train.classes) + 0.4), layout="constrained"
    )
    axes = fig.subplots(len(train.classes), len(sources), squeeze=False)
    labels = train.labels.numpy()
    for k, name in enumerate(train.classes):
        for j, source in enumerate(sources):
            ax = axes[k, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                members = np.flatnonzero(labels == k)
                chosen = rng.choice(members, size=min(per_cell, len(members)), replace=False)
                images = train.images[np.sort(chosen)].numpy()
            else:
                index = indexes[source]
                files = index.loc[index["class"] == name, "file"].head(per_cell)
                images = (
                    np.stack([read_png(synthetic_dir / source / f) for f in files]) if len(files) else None
                )
            if images is None or not len(images):
                ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(to_uint8_grid(images, nrow=per_cell), cmap="gray", vmin=0, vmax=255)
            if k == 0:
                ax.set_title(source, fontsize=10)
            if j == 0:
                ax.set_ylabel(name, fontsize=9)
    return fig


def class_distribution(train: Split, metrics: dict[str, VariantMetrics]) -> Figure:
    """Images per class in the real training split and in each variant's training set (real + extra)."""
    classes = train.classes
    sets = {"real train split": dict(zip(classes, train.class_counts().tolist(), strict=True))}
    sets |= {v: m.train_images for v, m in metrics.items() if m.train_images}
    fig = Figure(figsize=(8, 0.45 * len(sets) + 1.5), layout="constrained")
    ax = fig.subplots()
    left = np.zeros(len(sets))
    cmap = [f"C{i}" for i in range(len(classes))]
    for i, c in enumerate(classes):
        counts = np.array([s.get(c, 0) for s in sets.values()], dtype=float)
        ax.barh(list(sets), counts, left=left, color=cmap[i % len(cmap)], label=c)
        left += counts
    ax.invert_yaxis()
    ax.set_xlabel("training images per set (stacked by class)")
    ax.set_ylabel("training set")
    ax.legend(fontsize=8, title="class", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("Class distribution of the training sets")
    return fig


def write_figures(
    fig_dir: Path,
    n_per_class: list[int],
    metrics: dict[str, VariantMetrics],
    scores: dict[str, TestScores],
    train: Split,
    synthetic_dir: Path,
    indexes: dict[str, pd.DataFrame],
    params: ReportParams,
    gan_metrics: dict[str, dict] | None = None,
    generators: Sequence[str] | None = None,
) -> list[Path]:
    figures: dict[str, Figure] = {}
    for n in n_per_class:
        figures[f"auc_n{n}"] = auc_bars(n, metrics, train.classes, generators)
        if any(v in scores for v in table_variants(n, generators)):
            figures[f"roc_n{n}"] = roc_curves(n, scores, train.classes, generators)
    figures["real_vs_synthetic"] = real_vs_synthetic(
        train, synthetic_dir, indexes, params.grid_images, params.seed
    )
    figures["class_distribution"] = class_distribution(train, metrics)
    if gan_metrics:
        pr = precision_recall_figure(gan_metrics, train.classes)
        if pr is not None:
            figures["gan_precision_recall"] = pr
    paths = []
    for name, fig in figures.items():
        paths.append(fig_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=110)
    return paths
