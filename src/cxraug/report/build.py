"""`report` stage: the study's tables with our numbers (and the published ones beside them), a paired
comparison of every variant against the baseline, and figures.

Reads only finished outputs: metrics/classify/<V>.json (AUC mean/std over seeds and 95% CI), data/scores/
<V>.npz (test softmax per seed, for the paired bootstrap and ROC curves), data/synthetic/<gan>/ and
data/prepared/train.npz (image grids, class counts). A variant that has not been run is shown as "—" and
listed under "Missing", never silently dropped. Writes <out>/results.md, <out>/figures/*.png and a JSON
of the paired comparison (metrics/compare.json).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxraug.core.config import ReportParams
from cxraug.core.errors import CxraugError
from cxraug.report.paper import CITATION, PAPER_FAMILIES, paper_auc
from cxraug.core.runtime import atomic_dir, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

BASELINE = "baseline"
LABELS = {
    "baseline": "VGG16",
    "standard_aug": "+ standard aug",
    "bagan": "+ BAGAN",
    "opengan": "+ NewGAN",
    "weighted_loss": "weighted loss",
    "oversample": "oversample",
}
SIGNIFICANCE = 0.05  # p-value below which a cell is marked † (paired bootstrap vs baseline)


def family(variant: str) -> str:
    """'bagan_1000' -> 'bagan'; variants without a count are their own family."""
    head, _, tail = variant.rpartition("_")
    return head if tail.isdigit() else variant


def table_variants(n: int) -> list[str]:
    """The columns of the table for n images per class: the paper's four, then the cheap rebalancing."""
    return [BASELINE, f"standard_aug_{n}", f"bagan_{n}", f"opengan_{n}", "weighted_loss", "oversample"]


def all_variants(ns: list[int]) -> list[str]:
    names = [v for n in ns for v in table_variants(n)]
    return list(dict.fromkeys(names))


def label(variant: str) -> str:
    return LABELS.get(family(variant), variant)


# ---------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Inputs:
    classify_metrics: Path  # metrics/classify/<V>.json
    scores: Path  # data/scores/<V>.npz
    synthetic: Path  # data/synthetic/<gan>/
    prepared: Path  # data/prepared/
    gan_metrics: Path | None = None  # metrics/gan/<gan>.json (report/gan.py)


@dataclass(frozen=True)
class VariantMetrics:
    """One variant's metrics/classify JSON: per class (and macro) AUC mean and std over seeds, 95% CI."""

    name: str
    classes: tuple[str, ...]
    mean: dict[str, float]
    std: dict[str, float]
    ci: dict[str, tuple[float, float]]
    seeds: list[int]
    train_images: dict[str, int] = field(default_factory=dict)
    run_id: str | None = None

    MACRO = "macro AUC"

    @classmethod
    def read(cls, path: Path) -> VariantMetrics:
        try:
            m = json.loads(path.read_text())
            classes = tuple(m["classes"])
            return cls(
                name=path.stem,
                classes=classes,
                mean={**m["per_class_auc"], cls.MACRO: m["macro_auc"]},
                std={**m["per_class_auc_std"], cls.MACRO: m["macro_auc_std"]},
                ci={c: tuple(v) for c, v in {**m["per_class_auc_ci"], cls.MACRO: m["macro_auc_ci"]}.items()},
                seeds=list(m["seeds"]),
                train_images=dict(m.get("train_images") or {}),
                run_id=m.get("mlflow_run_id"),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise CxraugError(
                f"{path}: not a classify metrics file ({type(e).__name__}: {e}); rerun classify"
            ) from None


@dataclass(frozen=True)
class TestScores:
    """One variant's data/scores npz: softmax of every seed's model on the real test split."""

    scores: np.ndarray  # float [S, N, K]
    labels: np.ndarray  # int [N]
    patient_ids: np.ndarray
    image_index: np.ndarray
    classes: tuple[str, ...]

    @classmethod
    def read(cls, path: Path) -> TestScores:
        try:
            with np.load(path, allow_pickle=False) as z:
                scores = z["scores"]
                return cls(
                    scores=scores if scores.ndim == 3 else scores[None],
                    labels=z["labels"].astype(np.int64),
                    patient_ids=z["patient_ids"].astype(str),
                    image_index=z["image_index"].astype(str),
                    classes=tuple(str(c) for c in z["classes"]),
                )
        except (OSError, ValueError, KeyError) as e:
            raise CxraugError(f"{path}: not a classify scores file ({e}); rerun classify") from None

    @property
    def seed_mean(self) -> np.ndarray:
        return self.scores.mean(0)


def read_metrics(inputs: Inputs, variants: list[str], classes: tuple[str, ...]) -> dict[str, VariantMetrics]:
    found = {}
    for v in variants:
        path = inputs.classify_metrics / f"{v}.json"
        if path.is_file():
            found[v] = VariantMetrics.read(path)
            if found[v].classes != classes:
                raise CxraugError(
                    f"{path} is for classes {list(found[v].classes)}, data/prepared has {list(classes)}; "
                    "rerun classify"
                )
    return found


def read_scores(inputs: Inputs, variants: list[str]) -> dict[str, TestScores]:
    return {
        v: TestScores.read(inputs.scores / f"{v}.npz")
        for v in variants
        if (inputs.scores / f"{v}.npz").is_file()
    }


# ------------------------------------------------------------------------------------------ comparison


def compare_to_baseline(
    scores: dict[str, TestScores], variants: list[str], params: ReportParams
) -> dict[str, dict]:
    """Paired patient-level bootstrap of AUC(variant) - AUC(baseline), per class and macro; variants or a
    baseline without scores are left out (the caller reports them missing)."""
    if BASELINE not in scores:
        return {}
    from cxraug.metrics.auc import paired_bootstrap

    base = scores[BASELINE]
    results = {}
    for v in variants:
        if v == BASELINE or v not in scores:
            continue
        s = scores[v]
        if not (np.array_equal(s.image_index, base.image_index) and np.array_equal(s.labels, base.labels)):
            raise CxraugError(
                f"data/scores/{v}.npz and data/scores/{BASELINE}.npz scored different test images; "
                "rerun classify for both on the same data/prepared"
            )
        c = paired_bootstrap(
            s.scores, base.scores, base.labels, base.patient_ids, n_boot=params.n_bootstrap, seed=params.seed
        )
        results[v] = {
            "macro": _entry(c.macro_difference, c.macro_lo, c.macro_hi, c.macro_p_value),
            "per_class": {
                name: _entry(c.difference[k], c.lo[k], c.hi[k], c.p_value[k])
                for k, name in enumerate(base.classes)
            },
        }
    return results


def _entry(difference: float, lo: float, hi: float, p_value: float) -> dict:
    return {
        "difference": round(float(difference), 6),
        "ci_low": round(float(lo), 6),
        "ci_high": round(float(hi), 6),
        "p_value": round(float(p_value), 6),
    }


def _comparison_of(comparisons: dict[str, dict], variant: str, row: str) -> dict | None:
    c = comparisons.get(variant)
    if c is None:
        return None
    return c["macro"] if row == VariantMetrics.MACRO else c["per_class"].get(row)


# ---------------------------------------------------------------------------------------------- tables


def auc_cell(m: VariantMetrics, row: str, bold: bool, significant: bool) -> str:
    mean, std, (lo, hi) = m.mean[row], m.std[row], m.ci[row]
    value = f"**{mean:.3f}**" if bold else f"{mean:.3f}"
    return f"{value}{'†' if significant else ''} ± {std:.3f} ({lo:.3f}–{hi:.3f})"


def auc_table(
    n: int, metrics: dict[str, VariantMetrics], comparisons: dict[str, dict], classes: tuple[str, ...]
) -> str:
    """Rows = classes (+ macro), columns = variants; the paper's value beside each of its four columns when
    it published a table for this n. Bold: best of our variants in the row, at the 3 decimals shown."""
    variants = table_variants(n)
    with_paper = any(paper_auc(n, f, c) is not None for f in PAPER_FAMILIES for c in classes)
    header, align = ["class"], ["---"]
    for v in variants:
        header.append(label(v))
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


def comparison_table(n: int, comparisons: dict[str, dict], classes: tuple[str, ...]) -> str:
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
        lines.append(f"| {label(v)} (`{v}`) | " + " | ".join(cells) + " |")
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


# ---------------------------------------------------------------------------------------------- stage


@dataclass
class ReportResult:
    markdown: Path
    figures: list[Path]
    present: list[str]
    missing: list[str]
    compare: dict
    run_id: str | None = None


def read_synthetic_indexes(directory: Path) -> dict:
    from cxraug.synthesis.files import read_index

    if not directory.is_dir():
        return {}
    return {d.name: read_index(d) for d in sorted(directory.iterdir()) if (d / "index.csv").is_file()}


def make_report(
    params: ReportParams, n_per_class: list[int], inputs: Inputs, out_dir: Path, compare_path: Path
) -> ReportResult:
    from cxraug.data.datasets import load_split
    from cxraug.report.figures import write_figures
    from cxraug.report.gan import gan_section, read_gan_metrics

    train = load_split(inputs.prepared, "train")
    classes = train.classes
    variants = all_variants(n_per_class)
    metrics = read_metrics(inputs, variants, classes)
    scores = read_scores(inputs, variants)
    for v, s in scores.items():
        if s.classes != classes:
            raise CxraugError(
                f"{inputs.scores}/{v}.npz is for classes {list(s.classes)}, not {list(classes)}"
            )
    comparisons = compare_to_baseline(scores, variants, params)
    synthetic = read_synthetic_indexes(inputs.synthetic)
    missing = [v for v in variants if v not in metrics]
    notes = missing_notes(variants, metrics, scores, inputs)
    gan_found, gan_parts = read_gan_metrics(inputs.gan_metrics), []
    if inputs.gan_metrics is not None:
        gan_parts, gan_notes = gan_section(gan_found, inputs.gan_metrics, classes)
        notes += gan_notes

    with atomic_dir(out_dir / "figures") as fig_dir:
        figures = write_figures(
            fig_dir, n_per_class, metrics, scores, train, inputs.synthetic, synthetic, params, gan_found
        )
    figures = [out_dir / "figures" / f.name for f in figures]
    test = next(iter(scores.values()), None)
    markdown = render_markdown(
        n_per_class, metrics, comparisons, classes, synthetic, notes, figures, test, out_dir, gan_parts
    )
    atomic_write_text(out_dir / "results.md", markdown)
    compare = {
        "baseline": BASELINE,
        "n_bootstrap": params.n_bootstrap,
        "level": 0.95,
        "variants": comparisons,
        "missing": missing,
    }
    result = ReportResult(
        out_dir / "results.md", figures, [v for v in variants if v in metrics], missing, compare
    )
    result.run_id = log_to_mlflow(result, params, metrics, inputs)
    atomic_write_json(compare_path, {**compare, "mlflow_run_id": result.run_id})
    return result


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
            auc_table(n, metrics, comparisons, classes),
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
            comparison_table(n, comparisons, classes),
            "",
            figure(f"roc_n{n}", f"ROC curves, n = {n}"),
        ]
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


def log_to_mlflow(
    result: ReportResult, params: ReportParams, metrics: dict[str, VariantMetrics], inputs: Inputs
) -> str:
    import mlflow

    from cxraug.core import tracking
    tags = {f"variant.{v}.run_id": m.run_id for v, m in metrics.items() if m.run_id}
    read = [p for p in (inputs.classify_metrics, inputs.scores) if p.exists()]
    with tracking.stage_run(
        experiment="report", stage="report", params=params, inputs=read, extra_tags=tags
    ) as run_id:
        mlflow.log_metrics(
            {f"macro_difference.{v}": c["macro"]["difference"] for v, c in result.compare["variants"].items()}
            | {f"macro_auc.{v}": m.mean[VariantMetrics.MACRO] for v, m in metrics.items()}
        )
        mlflow.log_artifact(str(result.markdown))
        for f in result.figures:
            mlflow.log_artifact(str(f), artifact_path="figures")
    return run_id
