"""The few numbers per stage that `dvc metrics show` (and `dvc exp show`) print: one small JSON per stage
output, all sharing a handful of column names, so the table stays a screen wide. Everything else stays in
the stages' own JSON files under metrics/ (plain outputs, not DVC metrics), which the report reads.

Columns: images (prepared / accepted synthetic), patients, steps, seconds (training), acceptance
(synthesize), macro_auc with ci_low / ci_high (classify; a GAN's CAS), fd (a GAN's Fréchet distance in
the embedder's space), copies (a GAN's near-copies of training images in pixel space).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def _round(value, digits: int = 4):
    return round(float(value), digits) if value is not None else None


def _auc(d: dict) -> dict:
    low, high = d.get("macro_auc_ci") or (None, None)
    return {"macro_auc": _round(d.get("macro_auc")), "ci_low": _round(low), "ci_high": _round(high)}


def summarize(kind: str, detail: dict) -> dict:
    """The summary row of one metrics file; `kind` is the stage family that wrote it."""
    if kind == "prepare":
        return {"images": detail["images"], "patients": detail["patients"]}
    if kind.startswith("train_"):
        steps = detail.get("steps", (detail.get("ae_steps") or 0) + (detail.get("gan_steps") or 0))
        return {"steps": steps, "seconds": _round(detail["seconds"], 1)}
    if kind == "synthesize":
        return {"images": detail["accepted"], "acceptance": _round(detail["acceptance_rate"], 3)}
    if kind == "classify":
        return _auc(detail)
    if kind == "gan":
        row = _auc(detail["cas"]) if detail.get("cas") else {}
        overall = detail.get("fidelity", {}).get("overall", {})
        fd = overall.get("generated_vs_real", overall).get("fd_embedder")  # vs val (issue 15's layout)
        copies = detail.get("memorisation", {}).get("pixel", {}).get("copies")
        return {**row, "fd": _round(fd), "copies": copies}
    raise ValueError(f"no summary for metrics of kind {kind!r}")


def detail_files(metrics_dir: Path) -> Iterator[tuple[str, Path]]:
    """(kind, path) of every stage's metrics JSON under metrics_dir, the summaries themselves excluded:
    prepare.json, train_<gan>/seed<k>.json, synthesize/<gan>/seed<k>.json, classify/<variant>.json and
    gan/<gan>/seed<k>.json (one per generator replicate)."""
    for path in sorted(metrics_dir.glob("*.json")):
        if path.stem.startswith("train_") or path.stem == "prepare":
            yield path.stem, path
    for directory in sorted(p for p in metrics_dir.glob("train_*") if p.is_dir()):
        for path in sorted(directory.glob("*.json")):
            yield directory.name, path
    for kind in ("synthesize", "classify", "gan"):
        for path in sorted((metrics_dir / kind).rglob("*.json")):
            yield kind, path


def summary_rows(metrics_dir: Path) -> dict[str, dict]:
    """Summary file name (relative, e.g. 'classify/baseline.json') -> its row."""
    rows = {}
    for kind, path in detail_files(metrics_dir):
        rows[path.relative_to(metrics_dir).as_posix()] = summarize(kind, json.loads(path.read_text()))
    return rows
