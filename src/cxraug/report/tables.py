"""The report's markdown: the AUC tables laid out like the paper's, the comparisons, the synthetic counts,
what is missing, provenance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxraug.report.compare import SIGNIFICANCE, _comparison_of
from cxraug.report.gan import BLIND
from cxraug.report.inputs import BASELINE, Inputs, TestScores, VariantMetrics, family, label, table_variants
from cxraug.report.paper import CITATION, PAPER_FAMILIES, paper_auc


def auc_cell(m: VariantMetrics, row: str, bold: bool, significant: bool) -> str:
    mean, std, (lo, hi) = m.mean[row], m.std[row], m.ci[row]
    value = f"**{mean:.3f}**" if bold else f"{mean:.3f}"
    spread = f" ± {std:.3f}" if len(m.seeds) > 1 else ""  # one seed has no spread to show
    return f"{value}{'†' if significant else ''}{spread} ({lo:.3f}–{hi:.3f})"


def auc_table(
    n: int,
    metrics: dict[str, VariantMetrics],
    comparisons: dict[str, dict],
    classes: tuple[str, ...],
    blind: frozenset[str] = frozenset(),
) -> str:
    """Rows = classes (+ macro), columns = variants; the paper's value beside each of its four columns when
    it published a table for this n. Bold: best of our variants in the row, at the 3 decimals shown."""
    variants = table_variants(n)
    with_paper = any(paper_auc(n, f, c) is not None for f in PAPER_FAMILIES for c in classes)
    header, align = ["class"], ["---"]
    for v in variants:
        header.append(label(v) + (f" {BLIND}" if family(v) in blind else ""))
        align.append("---")
        if with_paper and family(v) in PAPER_FAMILIES:
            header.append("*paper*")
            align.append("---:")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in (*classes, VariantMetrics.MACRO):
        present = [round(metrics[v].mean[row], 3) for v in variants if v in metrics]
        best = max(present) if present else None
        cells = [row]
        for v in variants:
            if v in metrics:
                cmp = _comparison_of(comparisons, v, row)
                significant = cmp is not None and cmp["p_value"] < SIGNIFICANCE
                cells.append(auc_cell(metrics[v], row, round(metrics[v].mean[row], 3) == best, significant))
            else:
                cells.append("—")
            if with_paper and family(v) in PAPER_FAMILIES:
                published = paper_auc(n, family(v), row)
                cells.append(f"*{published:.3f}*" if published is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(
    n: int, comparisons: dict[str, dict], classes: tuple[str, ...], blind: frozenset[str] = frozenset()
) -> str:
    variants = [v for v in table_variants(n) if v != BASELINE]
    rows = (*classes, VariantMetrics.MACRO)
    lines = ["| variant | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for v in variants:
        cells = []
        for row in rows:
            c = _comparison_of(comparisons, v, row)
            if c is None:
                cells.append("—")
                continue
            lo, hi = c["ci_low"], c["ci_high"]
            mark = "†" if c["p_value"] < SIGNIFICANCE else ""
            p = "p<0.001" if c["p_value"] < 0.001 else f"p={c['p_value']:.3f}"
            cells.append(f"{c['difference']:+.3f}{mark} ({lo:+.3f}, {hi:+.3f}) {p}")
        mark = f" {BLIND}" if family(v) in blind else ""
        lines.append(f"| {label(v)} (`{v}`){mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def synthetic_table(synthetic: dict[str, object], classes: tuple[str, ...]) -> str:
    """Images written per class and their mean filter score, per GAN (from its index.csv)."""
    lines = ["| GAN | " + " | ".join(classes) + " |", "|---|" + "---|" * len(classes)]
    for gan, index in synthetic.items():
        cells = []
        for c in classes:
            rows = index[index["class"] == c]
            cells.append(f"{len(rows):,} (score {rows['score'].mean():.2f})" if len(rows) else "0")
        lines.append(f"| {gan} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def provenance_table(metrics: dict[str, VariantMetrics]) -> str:
    lines = ["| variant | seeds | MLflow run |", "|---|---|---|"]
    lines += [f"| `{v}` | {m.seeds} | `{m.run_id or 'unknown'}` |" for v, m in metrics.items()]
    return "\n".join(lines)


def missing_notes(
    variants: list[str], metrics: dict[str, VariantMetrics], scores: dict[str, TestScores], inputs: Inputs
) -> list[str]:
    notes = []
    for v in variants:
        if v not in metrics:
            notes.append(
                f"`{v}`: {inputs.classify_metrics}/{v}.json not found, shown as —; "
                f"run `cxraug classify --variant {v}` (or `dvc repro`)"
            )
        elif v not in scores:
            notes.append(f"`{v}`: {inputs.scores}/{v}.npz not found: no paired comparison or ROC curve")
    if BASELINE not in scores:
        notes.append(f"no {inputs.scores}/{BASELINE}.npz: the paired comparison needs the baseline's scores")
    return notes


def render_markdown(
    n_per_class: list[int],
    metrics: dict[str, VariantMetrics],
    comparisons: dict[str, dict],
    classes: tuple[str, ...],
    synthetic: dict,
    notes: list[str],
    figures: list[Path],
    test: TestScores | None,
    out_dir: Path,
    gan_parts: list[str] | None = None,
    external_parts: list[str] | None = None,
    gan_warning: list[str] | None = None,
    blind: frozenset[str] = frozenset(),
) -> str:
    def figure(stem: str, alt: str) -> str:
        match = [f for f in figures if f.stem == stem]
        return f"![{alt}]({match[0].relative_to(out_dir).as_posix()})\n" if match else ""

    seed_sets = {tuple(m.seeds) for m in metrics.values()}
    seeds = "differ by variant (see Provenance)" if len(seed_sets) > 1 else "—"
    if len(seed_sets) == 1:
        seeds = ", ".join(map(str, next(iter(seed_sets))))
    parts = [
        "# Results",
        "",
        "Written by `cxraug report` (DVC stage `report`) from `metrics/classify`, `data/scores`, "
        "`data/synthetic` and `data/prepared`; rerun `dvc repro report` rather than editing it.",
        "",
        *(gan_warning or []),  # class-blind generators (report/gan.py), before any figure
    ]
    if test is not None:
        counts = np.bincount(test.labels, minlength=len(classes))
        per_class = ", ".join(f"{c} {k:,}" for c, k in zip(classes, counts, strict=True))
        parts.append(
            f"Test split (real images only, the same for every variant): {len(test.labels):,} images of "
            f"{len(np.unique(test.patient_ids)):,} patients ({per_class})."
        )
        parts.append("")
    parts += [
        f"Seeds: {seeds}. Each cell: AUC (one-vs-rest, softmax) averaged over "
        "seeds ± its std over seeds (95% patient-level bootstrap CI of the seed-mean AUC). **Bold**: best of "
        "our variants in the row at the 3 decimals shown. †: differs from VGG16 in the paired bootstrap "
        f"(same patients resampled for both), p < {SIGNIFICANCE}. *paper*: the published value, "
        f"{CITATION}; NewGAN is our `opengan`. VGG16, weighted loss and oversample do not depend on n: the "
        "same runs appear in every table.",
        "",
    ]
    for n in n_per_class:
        parts += [
            f"## Augmenting {n:,} images per class",
            "",
            auc_table(n, metrics, comparisons, classes, blind),
            "",
        ]
        if not any(paper_auc(n, f, c) is not None for f in PAPER_FAMILIES for c in classes):
            parts += [f"The paper published no table for n = {n}; no *paper* columns.", ""]
        elif n == 3000:
            parts += [
                "The paper's 3000-image table has no plain VGG16 column (see the 1000-image table).",
                "",
            ]
        parts += [
            figure(f"auc_n{n}", f"per-class AUC, n = {n}"),
            f"### Paired comparison with VGG16, n = {n:,}",
            "",
            "AUC(variant) − AUC(VGG16) of the seed-mean AUC, 95% CI and two-sided p-value from the paired "
            "patient-level bootstrap (also in `metrics/compare.json`).",
            "",
            comparison_table(n, comparisons, classes, blind),
            "",
            figure(f"roc_n{n}", f"ROC curves, n = {n}"),
        ]
    parts += external_parts or []  # report/external.py: one table per external set
    parts += ["## Real and synthetic images", "", figure("real_vs_synthetic", "real vs synthetic images")]
    if synthetic:
        parts += [
            "Synthetic images written per class (mean filter score):",
            "",
            synthetic_table(synthetic, classes),
            "",
        ]
    if gan_parts:
        parts += [*gan_parts, figure("gan_precision_recall", "precision vs recall of the GANs")]
    parts += ["## Training sets", "", figure("class_distribution", "class distribution of the training sets")]
    parts += ["## Missing", ""]
    parts += [f"- {note}" for note in notes] or ["Nothing: every variant was run."]
    parts += ["", "## Provenance", "", provenance_table(metrics) if metrics else "No variant was run.", ""]
    return "\n".join(parts)
