"""The report's GAN section, for every generator of cxraug.gans.registry and each of its replicates: per
feature space, each figure of metrics/gan/<gan>/seed<k>.json as "generated vs real" (synthetic vs the
held-out real val split) next to "real vs real" (real train vs real val: the floor, what a perfect generator
would score), overall and per class; then CAS and the near-copy shares. A degenerate space is named, never
scored. A class-blind generator is warned about at the top of the report and beside its rows
(`blind_generators`, used by report/tables.py). A missing generator or figure is a "—". And a
precision/recall figure per space."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
from matplotlib.figure import Figure

from cxraug.core.config import GAN_EXTRACTORS, INDEPENDENT_EXTRACTORS
from cxraug.core.errors import CxraugError
from cxraug.gans import registry
from cxraug.report.inputs import study_generators

OVERALL = "overall (val class mix)"
MACRO = "macro AUC"
BLIND = "⚠ class-blind"
METRICS = ("fd", "kid", "precision", "recall")


def read_gan_metrics(directory: Path | None) -> dict[str, dict]:
    """metrics/gan/<gan>/seed<k>.json of every generator replicate that has one, keyed "<gan>" for the
    first replicate found and "<gan> seed<k>" for the others (each replicate is a row); an older file is a
    one-line error."""
    found = {}
    for gan in registry.names():
        replicates = sorted((Path(directory) / gan).glob("seed*.json")) if directory is not None else []
        for i, path in enumerate(replicates):
            key = gan if i == 0 else f"{gan} {path.stem}"
            try:
                found[key] = json.loads(path.read_text())
                fid = found[key]["fidelity"]
                if not isinstance(fid["per_class"], dict) or "generated_vs_real" not in fid["overall"]:
                    raise TypeError("no generated_vs_real / real_vs_real figures")
            except (ValueError, KeyError, TypeError) as e:
                raise CxraugError(
                    f"{path}: not a gan_metrics file of this version ({e}); "
                    f"rerun `dvc repro gan_metrics@{gan}-{path.stem.removeprefix('seed')}`"
                ) from None
    return found


def generator(key: str) -> str:
    """The generator of a read_gan_metrics key ("bagan", "bagan seed1" -> "bagan")."""
    return key.split(" ", 1)[0]


def blind_generators(found: dict[str, dict]) -> dict[str, list[str]]:
    """Generator -> why its images are class-blind (its first class-blind replicate's reasons), for
    those with a class-blind replicate."""
    blind: dict[str, list[str]] = {}
    for key, m in found.items():
        if m.get("class_blind"):
            blind.setdefault(generator(key), m["class_blind"])
    return blind


def blind_warning(found: dict[str, dict]) -> list[str]:
    """Lines for the top of the report: which generators are class-blind, and what that means."""
    blind = blind_generators(found)
    if not blind:
        return []
    lines = [
        f"> **Warning: class-blind generator{'s' if len(blind) > 1 else ''}.** Rows marked {BLIND} come "
        "from synthetic images that do not carry their class; differences they make to the classifier are "
        "not evidence about the method (see *GAN quality and memorisation*).",
    ]
    lines += [
        f"> - {registry.get(gan).label} (`{gan}`): {'; '.join(reasons)}." for gan, reasons in blind.items()
    ]
    return [*lines, ""]


def _extractors(found: dict[str, dict]) -> list[str]:
    names = [e for m in found.values() for e in m.get("extractors", [])]
    return list(dict.fromkeys(names)) or list(GAN_EXTRACTORS)


def _key(metric: str, space: str) -> str:
    return f"{'fid' if metric == 'fd' and space == 'inception' else metric}_{space}"


def _cell(side: dict, key: str) -> str:
    value = side.get(key)
    if value is None:
        return "—"
    digits = ".3f" if key.startswith(("precision", "recall")) else ".3g"
    sd = side.get(f"{key}_sd")
    return f"{value:{digits}}" + (f" ± {sd:{digits}}" if sd else "")


def _space_name(space: str) -> str:
    if space == "embedder":
        return "`embedder` (OpenGAN's own: it trains, conditions and filters with it)"
    if space in INDEPENDENT_EXTRACTORS:
        return f"`{space}` (independent: no generator saw it)"
    return f"`{space}` (the real-data VGG16's penultimate layer)"


def fidelity_table(metrics: dict, classes: tuple[str, ...], space: str) -> str:
    """Rows overall + classes; per metric, generated vs real beside real vs real."""
    header = ["", "n per side"]
    for m in METRICS:
        header += [f"`{_key(m, space)}` generated vs real", "real vs real"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    fid = metrics["fidelity"]
    rows = [(OVERALL, fid["overall"]), *((c, fid["per_class"].get(c)) for c in classes)]
    for name, entry in rows:
        entry = entry or {}
        cells = [name, f"{entry['n_per_side']:,}" if "n_per_side" in entry else "—"]
        for m in METRICS:
            key = _key(m, space)
            cells += [
                _cell(entry.get("generated_vs_real", {}), key),
                _cell(entry.get("real_vs_real", {}), key),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cas_copies_table(metrics: dict, classes: tuple[str, ...], label: str) -> str:
    memo = metrics.get("memorisation", {})
    audit_space = (memo.get("feature") or {}).get("space", "features")
    header = ["", "CAS AUC (95% CI)", "near-copies, pixels", f"near-copies, {audit_space}"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    cas = metrics.get("cas") or {}
    for name in (*classes, MACRO):
        cells = [name]
        if not cas:
            cells.append("—")
        elif name == MACRO:
            lo, hi = cas["macro_auc_ci"]
            cells.append(f"{cas['macro_auc']:.3f} ({lo:.3f}–{hi:.3f}){label}")
        else:
            lo, hi = cas["per_class_auc_ci"][name]
            cells.append(f"{cas['per_class_auc'][name]:.3f} ({lo:.3f}–{hi:.3f})")
        for space in ("pixel", "feature"):
            audit = memo.get(space) or {}
            share = (
                audit.get("copy_fraction")
                if name == MACRO
                else audit.get("per_class", {}).get(name, {}).get("copy_fraction")
            )
            cells.append("—" if share is None else f"{share:.1%}")
        lines.append("| " + " | ".join(cells) + " |")
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
    found: dict[str, dict],
    directory: Path | None,
    classes: tuple[str, ...],
    generators: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """The markdown lines of the section and the notes for "Missing" (`found`: read_gan_metrics; a
    generator of the study, `generators`, None = all, without metrics is missing)."""
    threshold = next((m["memorisation"]["copy_threshold"] for m in found.values()), None)
    parts = [
        "## GAN quality and memorisation",
        "",
        "Each generator's synthetic images against the held-out REAL VAL split, which no generator trains "
        "on (`cxraug gan-metrics`, `metrics/gan/<gan>/seed<k>.json`, one per generator replicate): "
        "**generated vs real** = synthetic vs val, "
        "next to **real vs real** = real train vs val, the floor a perfect generator would reach. Both sides "
        "of both comparisons hold the same images per class (val's class mix overall; the larger side "
        "subsampled, mean ± std over draws), so a figure is read against the floor on its own row. fd and "
        "kid: lower = closer; precision and recall: higher = better. Spaces: `random` (a fixed random conv "
        "net: independent of every generator), `embedder` (OpenGAN's own space: its figures favour OpenGAN "
        "by construction), `classifier` (the real-data VGG16, trained on the train side of the floor), "
        "`inception` (only there is FD an FID). CAS: AUC on the real test split of a VGG16 trained on "
        "synthetic images only. Near-copies: share of synthetic images whose nearest real training image "
        f"is closer than {threshold if threshold is not None else 'copy_threshold'} × the median distance "
        "between a real training image and its nearest real training image of another patient.",
        "",
    ]
    notes = []
    for gan in [
        *found,
        *(g for g in study_generators(generators) if g not in found),
    ]:  # every replicate, then the missing
        metrics = found.get(gan)
        reasons = (metrics or {}).get("class_blind")
        label = f" {BLIND}" if reasons else ""
        seed = f" seed{metrics['generator_seed']}" if metrics and "generator_seed" in metrics else ""
        seed = "" if " " in gan else seed  # "<gan> seed<k>" names its replicate already
        parts += [f"### {registry.get(generator(gan)).label} (`{gan}`){seed}{label}", ""]
        if metrics is None:
            parts += ["No figures.", ""]
            notes.append(
                f"`{gan}` GAN metrics: {directory}/{gan}/seed<k>.json not found, shown as —; "
                f"run `dvc repro gan_metrics@{gan}-<k>` (k in replicates.generator_seeds)"
            )
            continue
        if reasons:
            parts += [
                f"**{BLIND}**: {'; '.join(reasons)}. Its figures are not evidence about the method.",
                "",
            ]
        spaces = metrics["fidelity"]["spaces"]
        for space in metrics["extractors"]:
            entry = spaces.get(space, {})
            if entry.get("degenerate"):
                parts += [
                    f"{_space_name(space)}: **degenerate** — its real features do not spread (trace(cov) / "
                    f"mean squared norm {entry['real_spread']:.2g}): every distance in it is about 0, no "
                    "score is given.",
                    "",
                ]
                continue
            parts += [f"{_space_name(space)}:", "", fidelity_table(metrics, classes, space), ""]
        parts += [cas_copies_table(metrics, classes, label), "", cas_sentence(metrics), ""]
        if metrics["skipped"]["count"]:
            parts += [
                f"{metrics['skipped']['count']} figure(s) skipped for too few images (e.g. "
                f"{metrics['skipped']['reasons'][0]}); see the JSON.",
                "",
            ]
    return parts, notes


def precision_recall_figure(found: dict[str, dict], classes: tuple[str, ...]) -> Figure | None:
    """One panel per feature space: recall (x) vs precision (y) per generator, generated vs real (filled)
    and its real-vs-real floor (hollow), overall (star) and per class."""
    extractors = [
        e
        for e in _extractors(found)
        if any(f"precision_{e}" in m["fidelity"]["overall"]["generated_vs_real"] for m in found.values())
    ]
    if not extractors:
        return None
    fig = Figure(figsize=(3.8 * len(extractors), 3.6), layout="constrained")
    colors = mpl.colormaps["tab10"]
    for ax, e in zip(fig.subplots(1, len(extractors), squeeze=False)[0], extractors, strict=True):
        for i, (gan, m) in enumerate(found.items()):
            fid = m["fidelity"]
            rows = [("overall", fid["overall"])] + [(c, fid["per_class"].get(c, {})) for c in classes]
            for name, entry in rows:
                for side, filled in (("generated_vs_real", True), ("real_vs_real", False)):
                    p, r = (entry.get(side, {}).get(f"{x}_{e}") for x in ("precision", "recall"))
                    if p is None or r is None or (not filled and i > 0):
                        continue  # the floor is the same real images for every generator: drawn once
                    big = name == "overall"
                    color = colors(i) if filled else "0.4"
                    ax.scatter(
                        r,
                        p,
                        s=70 if big else 22,
                        marker="*" if big else "o",
                        facecolors=color if filled else "none",
                        edgecolors=color,
                        label=(
                            registry.get(generator(gan)).label + gan.removeprefix(generator(gan))
                            if filled
                            else "real vs real"
                        )
                        if big
                        else None,
                    )
                    if not big and filled:
                        ax.annotate(name[:3], (r, p), fontsize=6, xytext=(2, 2), textcoords="offset points")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"recall in {e} feature space")
        ax.set_ylabel(f"precision in {e} feature space")
        ax.set_title(f"{e} features vs val (star: overall; dots: classes)", fontsize=9)
        ax.legend(fontsize=7, title="generator", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig
