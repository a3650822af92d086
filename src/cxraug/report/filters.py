"""The report's "How BAGAN's result moves with its filter" table (filter_sensitivity; stages
synthesize_filter / classify_filter): one row per filter mode with what the filter kept, the images each
class actually trained on, the per-class and macro test AUC (two-level CIs), and the paired difference
from the reference mode (filter_sensitivity.modes[0], `none` by default) with raw and adjusted p.

A mode that could not fill n per class within synthesis's try budget (the paper's argmax rule on a D at
chance keeps ~0.05% of candidates) trained on what passed; its row says how many, per class, and a class
that got none is named. The comparisons are one family of their own (adjusted over every cell of this
table), and go to metrics/compare.json under "filter_sensitivity".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cxraug.classifier.variants import filter_variants
from cxraug.core import layout
from cxraug.core.config import FilterSensitivityParams, ReportParams
from cxraug.core.errors import CxraugError
from cxraug.gans import registry
from cxraug.report.compare import compare_pairs
from cxraug.report.inputs import TestScores, VariantMetrics
from cxraug.report.tables import auc_cell, comparison_table


@dataclass(frozen=True)
class FilterDraws:
    """What synthesize_filter@<mode>-<k> kept, summed over the generator replicates found."""

    mode: str
    replicates: list[str]
    tried: int
    passed: int  # candidates that passed the rule
    accepted: dict[str, list[int]]  # class -> images written per replicate (at most n)
    wanted: int

    @property
    def acceptance_rate(self) -> float:
        return self.passed / self.tried if self.tried else float("nan")


@dataclass
class FilterRow:
    mode: str
    variant: str
    draws: FilterDraws | None = None
    metrics: VariantMetrics | None = None
    used: dict[str, list[int]] = field(default_factory=dict)  # class -> images trained on, per replicate
    own: bool = False  # the generator's own rule: the study's <gan>_<n> column, not a classify_filter one


def read_filter_draws(directory: Path, mode: str) -> FilterDraws | None:
    """<directory>/seed<k>.json of every replicate (metrics/synthesize/<gan>-filter-<mode>/, or the
    study's own metrics/synthesize/<gan>/), or None if none exists."""
    paths = sorted(Path(directory).glob("seed*.json"))
    if not paths:
        return None
    tried, passed, accepted, wanted = 0, 0, {}, 0
    for path in paths:
        try:
            m = json.loads(path.read_text())
            for name, c in m["per_class"].items():
                tried += c["tried"]
                passed += c["passed"]
                accepted.setdefault(name, []).append(c["accepted"])
            wanted = m["wanted_per_class"]
        except (ValueError, KeyError, TypeError) as e:
            raise CxraugError(
                f"{path}: not a synthesize metrics file ({e}); rerun synthesize_filter"
            ) from None
    return FilterDraws(mode, [p.stem for p in paths], tried, passed, accepted, wanted)


def filter_rows(
    sensitivity: FilterSensitivityParams,
    classify_metrics: Path,
    synthesize_metrics: Path,
    own_mode: str | None = None,
) -> list[FilterRow]:
    """One row per filter_sensitivity mode; with `own_mode` (config.own_filter_mode: the study's
    <gan>_<n> column already is that mode's draw), its row second, from that column's files."""
    gan, root = sensitivity.gan, Path(synthesize_metrics)
    rows = [
        FilterRow(mode, variant, read_filter_draws(root / layout.filter_set(gan, mode), mode))
        for mode, variant in zip(sensitivity.modes, filter_variants(sensitivity), strict=True)
    ]
    if own_mode is not None:
        draws = read_filter_draws(root / gan, own_mode)
        rows.insert(1, FilterRow(own_mode, f"{gan}_{sensitivity.n_per_class}", draws, own=True))
    for row in rows:
        path = Path(classify_metrics) / f"{row.variant}.json"
        if path.is_file():
            row.metrics = VariantMetrics.read(path)
            used = json.loads(path.read_text()).get("synthetic_images") or {}
            for counts in used.values():
                for name, k in counts.items():
                    row.used.setdefault(name, []).append(k)
    return rows


def filter_comparisons(
    rows: list[FilterRow], scores: dict[str, TestScores], params: ReportParams, level: float = 0.95
) -> list[dict]:
    """Every mode - the reference mode (the first), per class and macro, p adjusted over this table. Both
    variants of a pair trained on the SAME generator replicates (one trained G per seed, filtered
    differently), so a generator seed is one training unit drawn once for both (paired_runs)."""
    reference = rows[0]
    pairs = [(r.variant, reference.variant, f"filter {r.mode} vs {reference.mode}") for r in rows[1:]]
    return compare_pairs(pairs, scores, params, level, paired_runs=True)


def _spread(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def _kept(row: FilterRow) -> str:
    d = row.draws
    if d is None:
        return "not drawn"
    kept = sum(sum(v) for v in d.accepted.values())
    rate = f"{d.acceptance_rate:.2%}" if d.tried else "—"
    text = f"{kept:,} of {d.tried:,} candidates ({rate} pass)"
    return f"{text}, drawn for {d.wanted:,} per class: `{row.variant}`'s images" if row.own else text


def _used(row: FilterRow, classes: tuple[str, ...], n: int) -> str:
    source = row.used or (row.draws.accepted if row.draws else {})
    if not source:
        return "—"
    short = [c for c in classes if min(source.get(c, [0])) < n]
    if not short:
        return f"{n:,} each"
    empty = [c for c in classes if min(source.get(c, [0])) == 0]
    text = ", ".join(f"{c} {_spread(source.get(c, [0]))}" for c in classes) + f" (of {n:,})"
    if empty:
        text += f"; **no images of {', '.join(empty)}** in some replicate (its runs added none)"
    return text


def _mode_label(mode: str, sensitivity: FilterSensitivityParams) -> str:
    return f"threshold {sensitivity.threshold:g}" if mode == "threshold" else mode


def filter_table(
    rows: list[FilterRow], sensitivity: FilterSensitivityParams, classes: tuple[str, ...]
) -> str:
    head = ["filter", "kept", "synthetic images trained on, per class", *classes, VariantMetrics.MACRO]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        label = f"`{_mode_label(r.mode, sensitivity)}`" + (" (its own filter)" if r.own else "")
        cells = [label, _kept(r)]
        cells.append(_used(r, classes, sensitivity.n_per_class))
        for row in (*classes, VariantMetrics.MACRO):
            cells.append(auc_cell(r.metrics, row, False, False) if r.metrics else "not trained")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def filter_section(
    rows: list[FilterRow],
    comparisons: list[dict],
    sensitivity: FilterSensitivityParams,
    classes: tuple[str, ...],
    adjusted: str,
) -> list[str]:
    """Markdown lines of the section (empty when no mode was drawn or trained)."""
    if not any(r.draws or r.metrics for r in rows):
        return []
    label = registry.get(sensitivity.gan).label
    missing = [r.variant for r in rows if r.metrics is None]
    parts = [
        f"## How {label}'s result moves with its filter",
        "",
        f"`{sensitivity.gan}_{sensitivity.n_per_class}` drawn under each filter mode (stages "
        "`synthesize_filter`, `classify_filter`): the same generator replicates, classifier seeds and step "
        "budget as the tables above; only which candidates are kept differs. *kept*: images written of the "
        "candidates drawn, over every replicate (a mode stops at n per class or at "
        "synthesize.filter.max_tries_factor × n tries); a class the filter could not fill trains on what "
        "passed. AUC cells as above.",
        "",
        filter_table(rows, sensitivity, classes),
        "",
    ]
    if missing:
        parts += [
            f"Not trained yet: {', '.join(f'`{v}`' for v in missing)} (`dvc repro classify_filter`).",
            "",
        ]
    if comparisons:
        parts += [
            f"Paired differences from `{rows[0].mode}` (95% two-level CI, raw p / {adjusted}-adjusted p over "
            "every cell of this table; † adjusted p < 0.05):",
            "",
            comparison_table(comparisons, classes),
            "",
        ]
    return parts
