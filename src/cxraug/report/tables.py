"""The report's markdown: the AUC tables laid out like the paper's, the comparisons, the synthetic counts,
what is missing, provenance."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cxraug.report.compare import SIGNIFICANCE, comparison_of
from cxraug.report.gan import BLIND
from cxraug.report.inputs import BASELINE, Inputs, TestScores, VariantMetrics, family, label, table_variants
from cxraug.report.paper import CITATION, PAPER_FAMILIES, paper_auc


def auc_cell(m: VariantMetrics, row: str, bold: bool, significant: bool) -> str:
    mean, std, (lo, hi) = m.mean[row], m.std[row], m.ci[row]
    value = f"**{mean:.3f}**" if bold else f"{mean:.3f}"
    spread = f" ± {std:.3f}" if len(m.seeds) > 1 else ""  # one seed has no spread to show
    return f"{value}{'†' if significant else ''}{spread} ({lo:.3f}–{hi:.3f})"


def header_label(variant: str, metrics: dict[str, VariantMetrics]) -> str:
    """A column's name; the baseline's names the network as configured ("VGG16-BN, pooled head")."""
    if variant == BASELINE and variant in metrics and metrics[variant].network:
        return metrics[variant].network
    return label(variant)


def auc_table(
    n: int,
    metrics: dict[str, VariantMetrics],
    comparisons: list[dict],
    classes: tuple[str, ...],
    blind: frozenset[str] = frozenset(),
    generators: Sequence[str] | None = None,
) -> str:
    """Rows = classes (+ macro), columns = variants; the paper's value beside each of its four columns when
    it published a table for this n. Bold: best of our variants in the row, at the 3 decimals shown."""
    variants = table_variants(n, generators)
    with_paper = any(paper_auc(n, f, c) is not None for f in PAPER_FAMILIES for c in classes)
    header, align = ["class"], ["---"]
    for v in variants:
        header.append(header_label(v, metrics) + (f" {BLIND}" if family(v) in blind else ""))
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
                cmp = comparison_of(comparisons, v, BASELINE, row)
                significant = cmp is not None and cmp["significant"]
                cells.append(auc_cell(metrics[v], row, round(metrics[v].mean[row], 3) == best, significant))
            else:
                cells.append("—")
            if with_paper and family(v) in PAPER_FAMILIES:
                published = paper_auc(n, family(v), row)
                cells.append(f"*{published:.3f}*" if published is not None else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p(p: float, floor: float) -> str:
    """p to 3 decimals; one below what the draws resolve (`floor`, 2 / B) as "<floor"."""
    return f"<{floor:.2g}" if p < floor else f"{p:.3f}"


def comparison_table(
    comparisons: list[dict], classes: tuple[str, ...], blind: frozenset[str] = frozenset()
) -> str:
    """One row per planned comparison of the table: difference (95% two-level CI), raw p / adjusted p;
    † only where the ADJUSTED p is below SIGNIFICANCE. A class-blind generator's rows carry BLIND."""
    rows = (*classes, VariantMetrics.MACRO)
    lines = ["| comparison | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for r in comparisons:
        cells = []
        floor = r.get("p_resolution", 0.001)  # compare.json written before it was recorded: 2,000 draws
        for row in rows:
            c = r["macro"] if row == VariantMetrics.MACRO else r["per_class"].get(row)
            if c is None:
                cells.append("—")
                continue
            mark = "†" if c["significant"] else ""
            cells.append(
                f"{c['difference']:+.3f}{mark} ({c['ci_low']:+.3f}, {c['ci_high']:+.3f}) "
                f"p {_p(c['p_value'], floor)} / adj {_p(c['p_adjusted'], floor)}"
            )
        mark = f" {BLIND}" if {family(r["a"]), family(r["b"])} & blind else ""
        lines.append(f"| `{r['a']}` − `{r['b']}`{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_table(metrics: dict[str, VariantMetrics]) -> str:
    """Per variant and run: optimizer steps taken, best step, images seen (classify.budget)."""
    lines = ["| variant | run | steps | best step | images seen |", "|---|---|---|---|---|"]
    for v, m in metrics.items():
        for key, r in m.per_run.items():
            lines.append(f"| `{v}` | {key} | {r['steps']:,} | {r['best_step']:,} | {r['images_seen']:,} |")
    return "\n".join(lines)


def discriminator_table(d_metrics: dict[str, dict], classes: tuple[str, ...]) -> str:
    """BAGAN's D on the REAL val split, per replicate: per-class one-vs-rest AUC (recall), balanced
    accuracy."""
    lines = [
        "| BAGAN replicate | " + " | ".join(classes) + " | macro AUC | balanced accuracy |",
        "|---|" + "---|" * (len(classes) + 2),
    ]
    for name, m in d_metrics.items():
        cells = [f"{m['d_val_auc'][c]:.3f} ({m['d_val_recall'][c]:.0%})" for c in classes]
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {m['d_val_macro_auc']:.3f} | {m['d_val_balanced_accuracy']:.1%} |"
        )
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
    lines = ["| variant | runs | MLflow run |", "|---|---|---|"]
    lines += [
        f"| `{v}` | {', '.join(m.runs) or m.seeds} | `{m.run_id or 'unknown'}` |" for v, m in metrics.items()
    ]
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
    comparisons: dict[int, list[dict]],
    classes: tuple[str, ...],
    synthetic: dict,
    notes: list[str],
    figures: list[Path],
    test: TestScores | None,
    out_dir: Path,
    gan_parts: list[str] | None = None,
    d_metrics: dict[str, dict] | None = None,
    adjust_method: str = "holm",
    external_parts: list[str] | None = None,
    filter_parts: list[str] | None = None,
    gan_warning: list[str] | None = None,
    blind: frozenset[str] = frozenset(),
    generators: Sequence[str] | None = None,
) -> str:
    def figure(stem: str, alt: str) -> str:
        match = [f for f in figures if f.stem == stem]
        return f"![{alt}]({match[0].relative_to(out_dir).as_posix()})\n" if match else ""

    run_counts = sorted({len(m.runs or m.seeds) for m in metrics.values()})
    seeds = "/".join(map(str, run_counts)) or "—"
    network = metrics[BASELINE].network if BASELINE in metrics and metrics[BASELINE].network else "VGG16"
    adjusted = {"holm": "Holm", "fdr_bh": "Benjamini–Hochberg (FDR)"}[adjust_method]
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
        f"Network: {network}. Training runs per variant: {seeds} (GAN variants: classify.seeds "
        "classifiers on every generator replicate, a full cross; see Provenance). Each cell: AUC "
        "(one-vs-rest, softmax), the mean over runs of each run's test AUC ± its SD over runs (95% "
        "two-level CI: training runs AND test patients resampled, metrics/inference.py). **Bold**: best of "
        "our variants in the row at the 3 decimals shown. †: differs from the baseline after "
        f"{adjusted} adjustment over every cell of the table's comparisons, adjusted p < {SIGNIFICANCE}. "
        f"*paper*: the published value, {CITATION}; NewGAN is our `opengan`. The baseline, weighted loss "
        "and oversample do not depend on n: the same runs appear in every table.",
        "",
    ]
    for n in n_per_class:
        parts += [
            f"## Augmenting {n:,} images per class",
            "",
            auc_table(n, metrics, comparisons.get(n, []), classes, blind, generators),
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
            f"### Comparisons, n = {n:,}",
            "",
            "AUC(a) − AUC(b): every generator vs the baseline, vs standard augmentation with the same n and "
            "vs the other generators; standard augmentation and rebalancing vs the baseline. 95% two-level "
            "CI (one patient resample for both, training runs drawn independently per variant), the raw "
            f"two-sided p of the same draws (p < 0.05 exactly when the CI excludes 0) and the {adjusted}-"
            "adjusted p over every cell of this table; † marks adjusted p < 0.05 only. All in "
            "`metrics/compare.json`.",
            "",
            comparison_table(comparisons.get(n, []), classes, blind),
            "",
            figure(f"roc_n{n}", f"ROC curves, n = {n}"),
        ]
    parts += filter_parts or []  # report/filters.py: how BAGAN's result moves with its filter
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
    if d_metrics:
        parts += [
            "## BAGAN's discriminator on the real val split",
            "",
            "The argmax filter keeps an image when D's top output is its intended class, so D must tell the "
            "real classes apart. Per class: one-vs-rest AUC of D's probability of the class on real val "
            "images (in brackets: recall of D's top real class); balanced accuracy = mean recall "
            "(`metrics/train_bagan/seed<k>.json`).",
            "",
            discriminator_table(d_metrics, classes),
            "",
        ]
    if any(m.per_run for m in metrics.values()):
        parts += ["## Training budget per run", "", budget_table(metrics), ""]
    parts += ["## Training sets", "", figure("class_distribution", "class distribution of the training sets")]
    parts += ["## Missing", ""]
    parts += [f"- {note}" for note in notes] or ["Nothing: every variant was run."]
    parts += ["", "## Provenance", "", provenance_table(metrics) if metrics else "No variant was run.", ""]
    return "\n".join(parts)
