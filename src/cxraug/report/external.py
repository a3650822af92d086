"""The report's "External validation" section: one table per external set NAME, laid out like the internal
AUC tables (rows = classes + macro AUC, columns = variants; mean over seeds ± std over seeds, bootstrap
CI), read from metrics/external/<NAME>/<V>.json (the external_* stages).

A class absent from the external set has no AUC: its cells say "undefined", never a number.

Paired comparisons: the internal tables' paired bootstrap vs the baseline (report/compare.py) works on a
TestScores per variant; data/scores/external/<NAME>/<V>.npz has the same fields, so the same comparison
(and whatever adjustment the internal tables adopt) applies by reading those files into TestScores and
passing them to `compare_table`, then adding a comparison table per NAME below `external_table`. It is left
out for now (the internal tables' adjusted p-values landed with issue 13; the external one is not yet
wired).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cxraug.core.errors import CxraugError
from cxraug.report.inputs import VariantMetrics, label

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
) -> list[str]:
    """Markdown lines of the "External validation" section (empty when no external set was scored)."""
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
    return parts
