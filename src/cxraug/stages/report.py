"""`report` stage: the study's tables with our numbers (and the published ones beside them), every
planned comparison (report/compare.py) with two-level CIs and adjusted p-values, BAGAN's discriminator on
real val, the training budget of every run, and figures.

Reads only finished outputs: metrics/classify/<V>.json (AUC mean/SD over runs and two-level CI), data/
scores/<V>.npz (test softmax per run, for the comparisons and ROC curves), metrics/train_bagan/seed<k>.json,
data/synthetic/<gan>/seed<k>/ and data/prepared/train.npz (image grids, class counts). A variant that has
not been run is shown as "—" and listed under "Missing", never silently dropped. Writes <out>/results.md,
<out>/figures/*.png and every comparison in metrics/compare.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cxraug.core import layout, tracking
from cxraug.core.config import FilterSensitivityParams, Params, ReportParams, own_filter_mode
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_dir, atomic_write_json, atomic_write_text
from cxraug.core.stage import NO_HOOKS, Hooks, StageResult
from cxraug.data.datasets import load_split
from cxraug.report.compare import compare_table
from cxraug.report.external import (
    external_section,
    read_external_metrics,
    read_external_scores,
)
from cxraug.report.figures import write_figures
from cxraug.report.filters import filter_comparisons, filter_rows, filter_section
from cxraug.report.gan import blind_generators, blind_warning, gan_section, read_gan_metrics
from cxraug.report.generators import generators_section
from cxraug.report.inputs import (
    BASELINE,
    Inputs,
    VariantMetrics,
    all_variants,
    read_metrics,
    read_scores,
    read_synthetic_indexes,
)
from cxraug.report.tables import missing_notes, render_markdown

log = logging.getLogger(__name__)


@dataclass
class ReportResult:
    markdown: Path
    figures: list[Path]
    present: list[str]
    missing: list[str]
    compare: dict
    run_id: str | None = None


def read_discriminator_metrics(directory: Path | None) -> dict[str, dict]:
    """{"seed<k>": metrics/train_bagan/seed<k>.json} of every BAGAN replicate that reports D on val."""
    if directory is None or not Path(directory).is_dir():
        return {}
    found = {}
    for path in sorted(Path(directory).glob("seed*.json")):
        m = json.loads(path.read_text())
        if "d_val_auc" in m:
            found[path.stem] = m
    return found


def make_report(
    params: ReportParams,
    n_per_class: list[int],
    inputs: Inputs,
    out_dir: Path,
    compare_path: Path,
    level: float = 0.95,
    train_bagan_metrics: Path | None = None,
    sensitivity: FilterSensitivityParams | None = None,
    synthesize_metrics: Path | None = None,
    external_scores: Path | None = None,
    generators: Sequence[str] | None = None,
    own_filter: str | None = None,
) -> ReportResult:
    """The report of the study: n_per_class x `generators` (params.yaml's; None = every registered one).
    `own_filter`: the filter-sensitivity mode the study's own column is (config.own_filter_mode)."""

    train = load_split(inputs.prepared, "train")
    classes = train.classes
    variants = all_variants(n_per_class, generators)
    metrics = read_metrics(inputs, variants, classes)
    scores = read_scores(inputs, variants)
    for v, s in scores.items():
        if s.classes != classes:
            raise CxraugError(
                f"{inputs.scores}/{v}.npz is for classes {list(s.classes)}, not {list(classes)}"
            )
    comparisons = {n: compare_table(n, scores, params, level, generators) for n in n_per_class}
    filter_parts, filter_compare = [], {}
    if sensitivity is not None and synthesize_metrics is not None:  # report/filters.py
        rows = filter_rows(sensitivity, inputs.classify_metrics, synthesize_metrics, own_filter)
        row_scores = read_scores(inputs, [r.variant for r in rows])
        filter_compare = filter_comparisons(rows, row_scores, params, level)
        adjusted = {"holm": "Holm", "fdr_bh": "Benjamini–Hochberg"}[params.adjust]
        filter_parts = filter_section(rows, filter_compare, sensitivity, classes, adjusted)
    external_compare = {  # report/external.py: the internal tables' comparisons on each external set
        name: {n: compare_table(n, found, params, level, generators) for n in n_per_class}
        for name, found in read_external_scores(external_scores).items()
    }
    d_metrics = read_discriminator_metrics(train_bagan_metrics)
    synthetic = read_synthetic_indexes(inputs.synthetic)
    missing = [v for v in variants if v not in metrics]
    notes = missing_notes(variants, metrics, scores, inputs)
    gan_found, gan_parts = read_gan_metrics(inputs.gan_metrics), []
    if inputs.gan_metrics is not None:
        gan_parts, gan_notes = gan_section(gan_found, inputs.gan_metrics, classes, generators)
        notes += gan_notes

    with atomic_dir(out_dir / "figures") as fig_dir:
        figures = write_figures(
            fig_dir,
            n_per_class,
            metrics,
            scores,
            train,
            inputs.synthetic,
            synthetic,
            params,
            gan_found,
            generators,
        )
    figures = [out_dir / "figures" / f.name for f in figures]
    test = next(iter(scores.values()), None)
    markdown = render_markdown(
        n_per_class,
        metrics,
        comparisons,
        classes,
        synthetic,
        notes,
        figures,
        test,
        out_dir,
        gan_parts,
        d_metrics,
        params.adjust,
        external_parts=external_section(
            read_external_metrics(inputs.external_metrics), variants, classes, external_compare
        ),
        filter_parts=filter_parts,
        gan_warning=blind_warning(gan_found),
        blind=frozenset(blind_generators(gan_found)),
        generators=generators,
    )
    markdown += "\n" + generators_section(inputs.synthetic, synthetic, inputs.prepared, classes)
    atomic_write_text(out_dir / "results.md", markdown)
    compare = {
        "baseline": BASELINE,
        "method": "two-level bootstrap (training runs x test patients), metrics/inference.py",
        "n_bootstrap": params.n_bootstrap,
        "level": level,
        "adjust": params.adjust,
        "family": "every cell (classes + macro) of one table's comparisons",
        "tables": {  # keyed "<a> - <b>" so `dvc metrics show` lists every comparison
            str(n): {f"{r['a']} - {r['b']}": r for r in rows} for n, rows in comparisons.items()
        },
        "missing": missing,
        "filter_sensitivity": {f"{r['a']} - {r['b']}": r for r in filter_compare},  # its own family
        "external": {  # per external set NAME, the tables' comparisons on its scores (one family per table)
            name: {str(n): {f"{r['a']} - {r['b']}": r for r in rows} for n, rows in tables.items()}
            for name, tables in external_compare.items()
        },
    }
    result = ReportResult(
        out_dir / "results.md", figures, [v for v in variants if v in metrics], missing, compare
    )
    result.run_id = log_to_mlflow(result, params, metrics, inputs)
    atomic_write_json(compare_path, {**compare, "mlflow_run_id": result.run_id})
    return result


def log_to_mlflow(
    result: ReportResult, params: ReportParams, metrics: dict[str, VariantMetrics], inputs: Inputs
) -> str:
    import mlflow

    tags = {f"variant.{v}.run_id": m.run_id for v, m in metrics.items() if m.run_id}
    read = [p for p in (inputs.classify_metrics, inputs.scores) if p.exists()]
    with tracking.stage_run(
        experiment="report", stage="report", params=params, inputs=read, extra_tags=tags
    ) as run_id:
        differences = {
            f"macro_difference.{r['a']}-{r['b']}": r["macro"]["difference"]
            for rows in result.compare["tables"].values()
            for r in rows.values()
        }
        mlflow.log_metrics(
            differences | {f"macro_auc.{v}": m.mean[VariantMetrics.MACRO] for v, m in metrics.items()}
        )
        mlflow.log_artifact(str(result.markdown))
        for f in result.figures:
            mlflow.log_artifact(str(f), artifact_path="figures")
    return run_id


# ------------------------------------------------------------------------------------------ the stage


@dataclass(frozen=True)
class Paths:
    classify_metrics: Path = layout.CLASSIFY_METRICS
    scores: Path = layout.SCORES
    synthetic: Path = layout.SYNTHETIC
    prepared: Path = layout.PREPARED
    gan_metrics: Path = layout.GAN_METRICS
    out: Path = layout.REPORTS  # results.md and figures/
    compare: Path = layout.COMPARE
    external_metrics: Path = layout.EXTERNAL_METRICS
    train_bagan_metrics: Path = layout.METRICS / "train_bagan"  # seed<k>.json: D on real val
    synthesize_metrics: Path = layout.SYNTHESIZE_METRICS  # <gan>-filter-<mode>/seed<k>.json: filter row
    external_scores: Path = layout.EXTERNAL_SCORES  # <NAME>/<V>.npz: external comparisons


def run(params: Params, paths: Paths = Paths(), hooks: Hooks = NO_HOOKS) -> StageResult:
    inputs = Inputs(
        paths.classify_metrics,
        paths.scores,
        paths.synthetic,
        paths.prepared,
        paths.gan_metrics,
        paths.external_metrics,
    )
    result = make_report(
        params.report,
        params.synthesize.n_per_class,
        inputs,
        paths.out,
        paths.compare,
        params.classify.ci_level,
        paths.train_bagan_metrics,
        params.filter_sensitivity,
        paths.synthesize_metrics,
        paths.external_scores,
        params.generators,
        own_filter_mode(params),
    )
    summary = f"{len(result.present)} variants reported" + (
        f", missing: {', '.join(result.missing)}" if result.missing else ""
    )
    outputs = (result.markdown, paths.out / "figures", paths.compare)
    return StageResult("report", summary, outputs, result.run_id, result.compare, result)
