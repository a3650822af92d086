"""The report's figures and cells read right: a chance line, legends beside the data, the AUC the
tables give, no spread printed for a single seed."""

import numpy as np
from sklearn.metrics import roc_auc_score

from cxraug.report.figures import auc_bars, roc_curves
from cxraug.report.inputs import TestScores as Scores
from cxraug.report.inputs import VariantMetrics
from cxraug.report.tables import auc_cell

CLASSES = ("A", "B")


def _metrics(seeds):
    rows = (*CLASSES, VariantMetrics.MACRO)
    return VariantMetrics(
        name="baseline",
        classes=CLASSES,
        mean=dict.fromkeys(rows, 0.8),
        std=dict.fromkeys(rows, 0.0 if len(seeds) == 1 else 0.02),
        ci=dict.fromkeys(rows, (0.7, 0.9)),
        seeds=seeds,
    )


def test_one_seed_shows_no_spread_and_several_do():
    assert auc_cell(_metrics([0]), "A", False, False) == "0.800 (0.700–0.900)"
    assert auc_cell(_metrics([0, 1]), "A", False, False) == "0.800 ± 0.020 (0.700–0.900)"


def _outside_axes(fig, ax):
    """True when the axes' legend lies outside the axes' data area."""
    fig.canvas.draw()
    legend, box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    return not legend.overlaps(box)


def test_auc_bars_have_a_chance_line_in_view_and_the_legend_outside():
    fig = auc_bars(100, {"baseline": _metrics([0, 1])}, CLASSES)
    ax = fig.axes[0]
    assert any(np.allclose(line.get_ydata(), 0.5) for line in ax.get_lines())
    assert ax.get_ylim()[0] < 0.5
    assert "AUC" in ax.get_ylabel() and ax.get_xlabel()
    assert _outside_axes(fig, ax)


def test_roc_legend_gives_the_tables_auc_the_mean_of_the_seeds():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    seeds = np.stack([np.column_stack([1 - p, p]) for p in rng.random((2, 200)) * 0.5 + labels * 0.3])
    scores = Scores(scores=seeds, labels=labels, patient_ids=np.arange(200), image_index=np.arange(200),
                        classes=CLASSES)  # fmt: skip
    fig = roc_curves(100, {"baseline": scores}, CLASSES)
    expected = np.mean([roc_auc_score(labels == 1, s[:, 1]) for s in seeds])
    texts = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any(f"AUC {expected:.3f}" in t for t in texts), texts
    assert fig.get_size_inches()[0] * 110 <= 1200  # fits a window at the saved dpi
    assert _outside_axes(fig, fig.axes[1])
