"""The report's GAN section: per GAN replicate, a table of metrics/gan/<gan>/seed<k>.json's figures
(fidelity per feature space, classification accuracy score, near-copy shares), named by the feature space
they were computed in; a missing GAN or figure is a "—". And a precision/recall figure per feature space."""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure

from cxraug.core.config import GAN_EXTRACTORS
from cxraug.core.errors import CxraugError
from cxraug.gans import registry

GANS = registry.names()
OVERALL = "overall (real class mix)"
MACRO = "macro AUC"


def read_gan_metrics(directory: Path | None) -> dict[str, dict]:
    """metrics/gan/<gan>/seed<k>.json of every GAN replicate that has one, keyed "<gan>" for the first
    replicate found and "<gan> seed<k>" for the others (each replicate is a row)."""
    found = {}
    for gan in GANS:
        replicates = sorted((Path(directory) / gan).glob("seed*.json")) if directory is not None else []
        for i, path in enumerate(replicates):
            key = gan if i == 0 else f"{gan} {path.stem}"
            try:
                found[key] = json.loads(path.read_text())
                if not isinstance(found[key]["fidelity"]["per_class"], dict):
                    raise TypeError("fidelity.per_class is not a mapping")
            except (ValueError, KeyError, TypeError) as e:
                raise CxraugError(
                    f"{path}: not a gan_metrics file ({e}); "
                    f"rerun `dvc repro gan_metrics@{gan}-{path.stem.removeprefix('seed')}`"
                ) from None
    return found


def _extractors(found: dict[str, dict]) -> list[str]:
    names = [e for m in found.values() for e in m.get("extractors", [])]
    return list(dict.fromkeys(names)) or list(GAN_EXTRACTORS)


def fidelity_columns(found: dict[str, dict]) -> list[str]:
    columns = []
    for e in _extractors(found):
        columns += [f"{'fid' if e == 'inception' else 'fd'}_{e}", f"kid_{e}", f"precision_{e}", f"recall_{e}"]
    return columns


def _number(value, key: str) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if key.startswith(("precision", "recall")) else f"{value:.4g}"


def gan_table(metrics: dict | None, classes: tuple[str, ...], columns: list[str], audit_space: str) -> str:
    header = ["", "n synthetic / real", *(f"`{c}`" for c in columns), "CAS AUC (95% CI)"]
    header += ["near-copies, pixels", f"near-copies, {audit_space}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    fid = (metrics or {}).get("fidelity", {})
    cas = (metrics or {}).get("cas") or {}
    memo = (metrics or {}).get("memorisation", {})
    rows = [(OVERALL, fid.get("overall")), *((c, fid.get("per_class", {}).get(c)) for c in classes)]
    for name, entry in rows:
        entry = entry or {}
        n = f"{entry['n_synthetic']:,} / {entry['n_real']:,}" if "n_synthetic" in entry else "—"
        cells = [name, n, *(_number(entry.get(c), c) for c in columns)]
        if name == OVERALL or not cas:
            cells.append("—")
        else:
            lo, hi = cas["per_class_auc_ci"][name]
            cells.append(f"{cas['per_class_auc'][name]:.3f} ({lo:.3f}–{hi:.3f})")
        for space in ("pixel", "feature"):
            audit = memo.get(space) or {}
            share = (
                audit.get("copy_fraction")
                if name == OVERALL
                else audit.get("per_class", {}).get(name, {}).get("copy_fraction")
            )
            cells.append("—" if share is None else f"{share:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
    macro = (
        f"{cas['macro_auc']:.3f} ({cas['macro_auc_ci'][0]:.3f}–{cas['macro_auc_ci'][1]:.3f})" if cas else "—"
    )
    lines.append("| " + " | ".join([MACRO, "", *([""] * len(columns)), macro, "", ""]) + " |")
    return "\n".join(lines)


def cas_sentence(metrics: dict) -> str:
    cas = metrics.get("cas")
    if not cas:
        return "CAS: not run (gan_metrics.cas.enabled is false)."
    text = f"CAS macro AUC {cas['macro_auc']:.3f} (seeds {cas['seeds']})"
    baseline = cas.get("baseline")
    if baseline and baseline.get("macro_auc") is not None:
        text += f"; the real-data VGG16 (`baseline`) {baseline['macro_auc']:.3f}"
    vs = cas.get("vs_baseline")
    if vs:
        d = vs["macro"]
        p = "p<0.001" if d["p_value"] < 0.001 else f"p={d['p_value']:.3f}"
        text += f"; paired difference {d['difference']:+.3f} ({d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}) {p}"
    return text + "."


def gan_section(
    found: dict[str, dict], directory: Path | None, classes: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """The markdown lines of the section and the notes for "Missing" (`found`: read_gan_metrics)."""
    columns = fidelity_columns(found)
    audit_space = _extractors(found)[0]
    threshold = next((m["memorisation"]["copy_threshold"] for m in found.values()), None)
    parts = [
        "## GAN quality and memorisation",
        "",
        "Synthetic images against the REAL TRAINING split (`cxraug gan-metrics`, `metrics/gan/<gan>.json`). "
        "Each figure is named by the feature space it was computed in: `embedder` (the frozen metric "
        "embedder), `classifier` (penultimate layer of the real-data VGG16), `inception` (Inception-v3; "
        "only there is the Fréchet distance an FID). fd and kid: lower = closer to the real images; "
        "precision (synthetic images inside the real images' k-NN balls) and recall (the converse): higher "
        "= better. The overall row takes the synthetic images at the real split's class mix. CAS: AUC on "
        "the real test split of a VGG16 trained on synthetic images only. Near-copies: share of synthetic "
        "images whose nearest real training image is closer than "
        f"{threshold if threshold is not None else 'copy_threshold'} × the median distance between a real "
        "training image and its nearest other one (pixels; features). Small classes give noisy figures "
        "(FD is biased upward at small n): compare GANs on the same row, not rows with each other.",
        "",
    ]
    notes = []
    for gan in [*found, *(g for g in GANS if g not in found)]:  # every replicate evaluated, then the missing
        metrics = found.get(gan)
        seed = f"seed{metrics['generator_seed']}" if metrics and "generator_seed" in metrics else ""
        parts += [
            f"### {gan} {seed if ' ' not in gan else ''}".rstrip(),
            "",
            gan_table(metrics, classes, columns, audit_space),
            "",
        ]
        if metrics is None:
            notes.append(
                f"`{gan}` GAN metrics: {directory}/{gan}/seed<k>.json not found, shown as —; "
                f"run `dvc repro gan_metrics@{gan}-<k>` (k in replicates.generator_seeds)"
            )
            continue
        parts += [cas_sentence(metrics), ""]
        if metrics["skipped"]["count"]:
            parts += [
                f"{metrics['skipped']['count']} figure(s) skipped for too few images (e.g. "
                f"{metrics['skipped']['reasons'][0]}); see the JSON.",
                "",
            ]
    return parts, notes


def precision_recall_figure(found: dict[str, dict], classes: tuple[str, ...]) -> Figure | None:
    """One panel per feature space: recall (x) vs precision (y) per GAN, overall (large) and per class."""
    extractors = [
        e
        for e in _extractors(found)
        if any(f"precision_{e}" in m["fidelity"]["overall"] for m in found.values())
    ]
    if not extractors:
        return None
    fig = Figure(figsize=(3.8 * len(extractors), 3.6), layout="constrained")
    colors = {"bagan": "tab:orange", "opengan": "tab:green"}
    for ax, e in zip(fig.subplots(1, len(extractors), squeeze=False)[0], extractors, strict=True):
        for gan, m in found.items():
            fid = m["fidelity"]
            rows = [("overall", fid["overall"])] + [(c, fid["per_class"].get(c, {})) for c in classes]
            for name, entry in rows:
                p, r = entry.get(f"precision_{e}"), entry.get(f"recall_{e}")
                if p is None or r is None:
                    continue
                big = name == "overall"
                ax.scatter(
                    r,
                    p,
                    s=70 if big else 22,
                    color=colors.get(gan, "tab:gray"),
                    marker="*" if big else "o",
                    label=gan if big else None,
                )
                if not big:
                    ax.annotate(name[:3], (r, p), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"recall_{e}")
        ax.set_ylabel(f"precision_{e}")
        ax.set_title(f"{e} features (star: overall)", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    return fig
