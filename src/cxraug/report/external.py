"""The report's "External validation" section: one table per external set NAME, laid out like the internal
AUC tables (rows = classes + macro AUC, columns = variants; mean over seeds ± std over seeds, bootstrap
CI), read from metrics/external/<NAME>/<V>.json (the external_* stages).

A class absent from the external set has no AUC: its cells say "undefined", never a number.

Paired comparisons: the internal tables' comparisons (report/compare.py `compare_table`: every generator
vs the baseline, vs standard_aug at the same n and vs the other generators, ...) made on each set's scores,
data/scores/external/<NAME>/<V>.npz, with the same two-level bootstrap (training runs x patients, or images
where the set names no patients) and the same adjustment, one family per (set, n). A class the set lacks
has no AUC and no comparison ("—").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxraug.core.errors import CxraugError
from cxraug.report.inputs import TestScores, VariantMetrics, label
from cxraug.report.tables import comparison_table

MACRO = VariantMetrics.MACRO
NEEDED = {"per_class_auc", "per_class_auc_std", "per_class_auc_ci", "macro_auc", "macro_auc_std"}
NEEDED |= {"macro_auc_ci", "images", "images_per_class", "skipped", "bootstrap", "data", "source"}


@dataclass(frozen=True)
class ExternalResult:
    """One metrics/external/<NAME>/<V>.json."""

    name: str
    variant: str
    metrics: dict

    def cell(self, row: str, bold: bool) -> str:
        m = self.metrics
        mean, std, ci = (
            (m["macro_auc"], m["macro_auc_std"], m["macro_auc_ci"])
            if row == MACRO
            else (
                m["per_class_auc"].get(row),
                m["per_class_auc_std"].get(row),
                m["per_class_auc_ci"].get(row),
            )
        )
        if mean is None:
            return "undefined"
        value = f"**{mean:.3f}**" if bold else f"{mean:.3f}"
        return f"{value} ± {std:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"

    def mean(self, row: str) -> float | None:
        return self.metrics["macro_auc"] if row == MACRO else self.metrics["per_class_auc"].get(row)


def read_external_metrics(root: Path | None) -> dict[str, dict[str, ExternalResult]]:
    """NAME -> variant -> result, for every <root>/<NAME>/<V>.json (nothing when root is absent)."""
    found: dict[str, dict[str, ExternalResult]] = {}
    if root is None or not root.is_dir():
        return found
    for path in sorted(root.glob("*/*.json")):
        try:
            metrics = json.loads(path.read_text())
        except ValueError as e:
            raise CxraugError(f"{path}: not valid JSON ({e}); rerun external-test") from None
        if not isinstance(metrics, dict) or not metrics.keys() >= NEEDED:
            raise CxraugError(f"{path}: not an external-test metrics file; rerun external-test")
        found.setdefault(path.parent.name, {})[path.stem] = ExternalResult(
            path.parent.name, path.stem, metrics
        )
    return found


def read_external_scores(root: Path | None) -> dict[str, dict[str, TestScores]]:
    """NAME -> variant -> its scores, for every <root>/<NAME>/<V>.npz. A set without patients resamples
    images (each image its own patient); runs keep their generator seed (written since issue 13)."""
    found: dict[str, dict[str, TestScores]] = {}
    if root is None or not Path(root).is_dir():
        return found
    for path in sorted(Path(root).glob("*/*.npz")):
        try:
            with np.load(path, allow_pickle=False) as z:
                image_index = z["image_index"].astype(str)
                groups = z["generator_seeds"] if "generator_seeds" in z.files else None
                scores = TestScores(
                    scores=z["scores"],
                    labels=z["labels"].astype(np.int64),
                    patient_ids=z["patient_ids"].astype(str) if "patient_ids" in z.files else image_index,
                    image_index=image_index,
                    classes=tuple(str(c) for c in z["classes"]),
                    run_groups=groups if groups is not None and (groups >= 0).all() else None,
                )
        except (OSError, ValueError, KeyError) as e:
            raise CxraugError(
                f"{path}: not an external-test scores file ({e}); rerun external-test"
            ) from None
        found.setdefault(path.parent.name, {})[path.stem] = scores
    return found


def external_table(results: dict[str, ExternalResult], variants: list[str], classes: tuple[str, ...]) -> str:
    """Rows = classes + macro AUC, columns = the variants scored (in the report's order). Bold: best in the
    row at the 3 decimals shown."""
    shown = [v for v in variants if v in results] + sorted(set(results) - set(variants))
    lines = ["| class | " + " | ".join(label(v) for v in shown) + " |", "|---" * (len(shown) + 1) + "|"]
    for row in (*classes, MACRO):
        values = [results[v].mean(row) for v in shown]
        best = max((round(x, 3) for x in values if x is not None), default=None)
        cells = [
            results[v].cell(row, x is not None and round(x, 3) == best)
            for v, x in zip(shown, values, strict=True)
        ]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _describe(results: dict[str, ExternalResult]) -> str:
    m = next(iter(results.values())).metrics
    per_class = ", ".join(f"{c} {n:,}" for c, n in m["images_per_class"].items())
    patients = f" of {m['patients']:,} patients" if m.get("patients") else ""
    skipped = ", ".join(f"{r} {n:,}" for r, n in m["skipped"].items() if n) or "none"
    absent = m.get("absent_classes") or []
    unit = m["bootstrap"]["unit"]
    text = (
        f"`{m['data']}` ({m['source']} layout): {m['images']:,} images{patients} ({per_class}); skipped: "
        f"{skipped}. Every image is test. CIs: 95% {unit}-level bootstrap of the seed-mean AUC."
    )
    if absent:
        text += f" No images of {', '.join(absent)}: AUC undefined; the macro AUC averages the others."
    md5s = {r.metrics["pixels_md5"] for r in results.values()}
    if len(md5s) > 1:
        text += " **The variants were scored on different images** (the set changed between runs)."
    return text


def external_section(
    found: dict[str, dict[str, ExternalResult]],
    variants: list[str],
    classes: tuple[str, ...],
    comparisons: dict[str, dict[int, list[dict]]] | None = None,
) -> list[str]:
    """Markdown lines of the "External validation" section (empty when no external set was scored);
    `comparisons`: NAME -> n -> `compare_table` rows (the internal comparisons on that set's scores),
    shown below the set's table."""
    if not found:
        return []
    parts = [
        "## External validation",
        "",
        "Each trained variant scored, every seed, on a second data set never used in training "
        "(`cxraug external-test`, stages `external_*`; docs/external.md). Cells as in the tables above.",
        "",
    ]
    for name, results in found.items():
        parts += [f"### {name}", "", _describe(results), "", external_table(results, variants, classes), ""]
        for n, rows in (comparisons or {}).get(name, {}).items():
            if rows:
                parts += [
                    f"Comparisons on {name}, n = {n:,} (as in the internal comparison table: 95% two-level "
                    "CI, raw p / adjusted p over every cell of this table, † adjusted p < 0.05):",
                    "",
                    comparison_table(rows, classes),
                    "",
                ]
    return parts
