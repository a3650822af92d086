"""ROC points and the two figures a classifier run is judged by: ROC curves and a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def roc_points(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """One-vs-rest ROC curve of every class from scores [N, K]: columns class, fpr, tpr."""
    from sklearn.metrics import roc_curve

    frames = []
    for k, name in enumerate(classes):
        fpr, tpr, _ = roc_curve(np.asarray(labels) == k, scores[:, k])
        frames.append(pd.DataFrame({"class": name, "fpr": fpr.round(6), "tpr": tpr.round(6)}))
    return pd.concat(frames, ignore_index=True)


def roc_figure(points: pd.DataFrame, aucs: dict[str, float], title: str):
    """ROC curves, one per class; the legend (beside the axes) gives `aucs`, which the caller names in
    the title (classify: the mean of the seeds' AUCs, while the curves are of the seed-mean scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100)
    for name, curve in points.groupby("class", sort=False):
        ax.plot(curve["fpr"], curve["tpr"], label=f"{name}: AUC {aucs[name]:.3f}")
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="chance (AUC 0.5)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figure(scores: np.ndarray, labels: np.ndarray, classes: Sequence[str], title: str):
    """Row-normalised confusion matrix of the arg-max prediction (rows: true class), counts in cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    k = len(classes)
    counts = confusion_matrix(labels, scores.argmax(1), labels=list(range(k)))
    rates = counts / counts.sum(1, keepdims=True).clip(min=1)
    fig, ax = plt.subplots(figsize=(1.1 * k + 2, 1.1 * k + 1.5), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{counts[i, j]}\n{rates[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rates[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), classes, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return fig
