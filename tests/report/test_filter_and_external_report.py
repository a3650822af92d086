"""The report's filter-sensitivity table and the external sets' comparisons, on planted fixture files: the
numbers equal an independent computation (AUCs by sklearn, the paired two-level comparison called
directly, Holm by statsmodels), a short mode says how short, and everything lands in compare.json."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests

from cxraug.core.config import FilterSensitivityParams, ReportParams
from cxraug.core.runtime import atomic_savez
from cxraug.metrics.inference import two_level_comparison
from cxraug.stages.report import make_report
from tests.report.test_report import CLASSES, N_TEST, make_inputs, metrics_from, table_rows

# argmax is BAGAN's own rule: as a mode, only valid where n is not one of synthesize.n_per_class
ROW = FilterSensitivityParams(gan="bagan", n_per_class=1000, modes=["none", "argmax", "threshold"])
STRENGTH = {"none": 1.0, "argmax": 0.4, "threshold": 1.6}
GROUPS = np.array([0, 0, 1, 1])  # generator seed of each run: 2 generator replicates x 2 classifier seeds
# what synthesize_filter kept per replicate: argmax falls short (no Nodule at all in seed 1)
ACCEPTED = {
    "none": {c: [1000, 1000] for c in CLASSES},
    "argmax": {**{c: [3, 5] for c in CLASSES}, "Nodule": [2, 0]},
    "threshold": {c: [1000, 1000] for c in CLASSES},
}
TRIED = {"none": 1000, "argmax": 20_000, "threshold": 4000}  # per class and replicate


def scores_of(strength: float, labels: np.ndarray, generator_shift: bool = True) -> np.ndarray:
    """Per run: softmax(strength x one-hot + noise); the noise is shared by every mode for the same run,
    and each generator replicate adds its own shift, so pairing by generator seed matters."""
    out = []
    for run, g in enumerate(GROUPS):
        rng = np.random.default_rng(500 + run)
        logits = strength * np.eye(len(CLASSES))[labels] + rng.normal(size=(len(labels), len(CLASSES)))
        if generator_shift:
            logits += 0.6 * g * np.eye(len(CLASSES))[labels]
        out.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    return np.stack(out).astype(np.float32)


def macro(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(
        np.mean([[roc_auc_score(labels == k, s[:, k]) for k in range(len(CLASSES))] for s in scores])
    )


def plant(root, classify_metrics, variant, scores, labels, patients, accepted, tried, synthetic_set, wanted):
    """What synthesize wrote for `synthetic_set` (per replicate) and, if `scores` is given, what classify
    wrote for `variant`: its scores and metrics, with the images each class trained on."""
    for g in (0, 1):
        per_class = {
            c: {"accepted": k[g], "tried": tried, "passed": k[g], "acceptance_rate": k[g] / tried}
            for c, k in accepted.items()
        }
        path = root / "metrics/synthesize" / synthetic_set / f"seed{g}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"per_class": per_class, "wanted_per_class": wanted}))
    if scores is None:
        return
    atomic_savez(
        root / "data/scores" / f"{variant}.npz",
        scores=scores,
        labels=labels,
        patient_ids=patients,
        generator_seeds=GROUPS,
        classes=np.array(CLASSES),
        image_index=np.array([f"{i:05d}.png" for i in range(N_TEST)]),
    )
    used = {f"seed{g}": {c: min(k[g], 1000) for c, k in accepted.items()} for g in (0, 1)}
    m = metrics_from(variant, scores, labels) | {"synthetic_images": used}
    (classify_metrics / f"{variant}.json").write_text(json.dumps(m))


@pytest.fixture(scope="module")
def report(tmp_path_factory, tracking_uri):
    root = tmp_path_factory.mktemp("project")
    inputs = make_inputs(root)
    labels = np.arange(N_TEST) % len(CLASSES)
    patients = np.array([f"p{i // 2}" for i in range(N_TEST)])
    planted = {}
    for mode, strength in STRENGTH.items():
        variant = f"bagan_1000_{mode}"
        planted[variant] = scores = scores_of(strength, labels)
        trained = None if mode == "threshold" else scores  # threshold: drawn, its classifiers not trained yet
        plant(root, inputs.classify_metrics, variant, trained, labels, patients, ACCEPTED[mode], TRIED[mode],
              f"bagan-filter-{mode}", 1000)  # fmt: skip
    # an external set without patients: baseline, standard aug and BAGAN scored on it
    ext_labels = np.arange(200) % len(CLASSES)
    for variant, strength in {"baseline": 1.0, "standard_aug_1000": 1.1, "bagan_1000": 2.0}.items():
        planted[f"ext/{variant}"] = s = scores_of(strength, ext_labels, generator_shift=False)
        arrays = {"generator_seeds": GROUPS} if variant == "bagan_1000" else {}
        atomic_savez(
            root / "data/scores/external/ext" / f"{variant}.npz",
            scores=s,
            labels=ext_labels,
            image_index=np.array([f"e{i}.png" for i in range(200)]),
            classes=np.array(CLASSES),
            seeds=np.arange(4),
            **arrays,
        )
        m = metrics_from(variant, s, ext_labels) | {
            "images": 200,
            "images_per_class": {c: 40 for c in CLASSES},
            "skipped": {},
            "bootstrap": {"unit": "image"},
            "data": "ext",
            "source": "folders",
            "pixels_md5": "x",
        }
        path = root / "metrics/external/ext" / f"{variant}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(m))
    params = ReportParams(n_bootstrap=1000, grid_images=2)
    inputs = replace(inputs, external_metrics=root / "metrics/external")
    make_report(
        params,
        [1000],
        inputs,
        root / "reports",
        root / "metrics/compare.json",
        sensitivity=ROW,
        synthesize_metrics=root / "metrics/synthesize",
        external_scores=root / "data/scores/external",
    )
    compare = json.loads((root / "metrics/compare.json").read_text())
    return compare, (root / "reports/results.md").read_text(), planted, labels, patients, params


def test_the_filter_table_shows_what_each_mode_kept_and_trained_on(report):
    _, md, planted, labels, *_ = report
    rows = {r[0]: r for r in table_rows(md, "## How BAGAN's result moves with its filter")}
    argmax = rows["`argmax`"]
    kept = sum(sum(k) for k in ACCEPTED["argmax"].values())
    tried = 2 * len(CLASSES) * TRIED["argmax"]
    assert argmax[1] == f"{kept:,} of {tried:,} candidates ({kept / tried:.2%} pass)"
    assert "Nodule 0–2" in argmax[2] and "No Finding 3–5" in argmax[2] and "no images of Nodule" in argmax[2]
    assert rows["`none`"][2] == "1,000 each"
    assert argmax[-1].startswith(f"{macro(planted['bagan_1000_argmax'], labels):.3f}")  # macro AUC
    assert rows["`threshold 0.5`"][3] == "not trained" and "Not trained yet: `bagan_1000_threshold`" in md


def test_each_mode_is_compared_with_none_paired_by_generator_seed(report):
    compare, md, planted, labels, patients, params = report
    rows = compare["filter_sensitivity"]
    assert set(rows) == {"bagan_1000_argmax - bagan_1000_none"}  # threshold is not trained: no comparison
    r = rows["bagan_1000_argmax - bagan_1000_none"]
    a, b = planted["bagan_1000_argmax"], planted["bagan_1000_none"]
    assert r["macro"]["difference"] == pytest.approx(macro(a, labels) - macro(b, labels), abs=1e-6)
    direct = two_level_comparison(
        a, b, labels, patients, run_groups_a=GROUPS, run_groups_b=GROUPS, paired_runs=True,
        n_boot=params.n_bootstrap, seed=params.seed,
    )  # fmt: skip
    assert r["macro"]["ci_low"] == pytest.approx(direct.macro_lo, abs=1e-6)
    assert r["macro"]["p_value"] == pytest.approx(direct.macro_p_value, abs=1e-6)
    # the generator replicates' shift is shared by both modes: pairing by generator seed cancels it, so the
    # interval is narrower than if the two variants' runs were independent
    unpaired = two_level_comparison(
        a, b, labels, patients, run_groups_a=GROUPS, run_groups_b=GROUPS,
        n_boot=params.n_bootstrap, seed=params.seed,
    )  # fmt: skip
    assert r["macro"]["difference"] < 0  # argmax is planted worse
    assert r["macro"]["ci_high"] - r["macro"]["ci_low"] < unpaired.macro_hi - unpaired.macro_lo
    cells = [r["macro"], *r["per_class"].values()]
    holm = multipletests([max(c["p_value"], 2 / params.n_bootstrap) for c in cells], method="holm")[1]
    np.testing.assert_allclose([c["p_adjusted"] for c in cells], holm, atol=1e-6)
    assert "`bagan_1000_argmax` − `bagan_1000_none`" in md


def test_the_generators_own_filter_is_the_studys_column_not_a_mode_of_its_own(tmp_path, tracking_uri):
    """filter_sensitivity.modes [none] with BAGAN's own rule argmax at an n the study draws: the table's
    second row is the study's bagan_1000 column (its scores, and what its synthesize stage kept for
    3000 per class), compared with none as any mode is."""
    inputs = make_inputs(tmp_path)
    labels = np.arange(N_TEST) % len(CLASSES)
    patients = np.array([f"p{i // 2}" for i in range(N_TEST)])
    none, own = scores_of(1.0, labels), scores_of(1.8, labels)
    full = {c: [3000, 3000] for c in CLASSES}
    where = (tmp_path, inputs.classify_metrics)
    plant(
        *where, "bagan_1000_none", none, labels, patients, ACCEPTED["none"], 1000, "bagan-filter-none", 1000
    )
    plant(*where, "bagan_1000", own, labels, patients, full, 9000, "bagan", 3000)
    params = ReportParams(n_bootstrap=1000, grid_images=2)
    make_report(
        params,
        [1000],
        inputs,
        tmp_path / "reports",
        tmp_path / "compare.json",
        sensitivity=ROW.model_copy(update={"modes": ["none"]}),
        synthesize_metrics=tmp_path / "metrics/synthesize",
        own_filter="argmax",
    )
    md = (tmp_path / "reports/results.md").read_text()
    rows = table_rows(md, "## How BAGAN's result moves with its filter")[1:]  # below the header
    assert [r[0] for r in rows] == ["`none`", "`argmax` (its own filter)"]
    tried = 2 * len(CLASSES) * 9000
    assert (
        rows[1][1]
        == f"30,000 of {tried:,} candidates (33.33% pass), drawn for 3,000 per class: `bagan_1000`'s images"
    )
    assert rows[1][2] == "1,000 each"  # what bagan_1000's classifiers trained on
    assert rows[1][-1].startswith(f"{macro(own, labels):.3f}")
    (pair,) = json.loads((tmp_path / "compare.json").read_text())["filter_sensitivity"].values()
    assert (pair["a"], pair["b"]) == ("bagan_1000", "bagan_1000_none")
    assert pair["macro"]["difference"] == pytest.approx(macro(own, labels) - macro(none, labels), abs=1e-6)


def test_external_sets_get_the_internal_comparisons(report):
    compare, md, planted, *_, params = report
    table = compare["external"]["ext"]["1000"]
    assert set(table) == {
        "bagan_1000 - baseline",
        "bagan_1000 - standard_aug_1000",
        "standard_aug_1000 - baseline",
    }
    ext_labels = np.arange(200) % len(CLASSES)
    r = table["bagan_1000 - baseline"]
    expected = macro(planted["ext/bagan_1000"], ext_labels) - macro(planted["ext/baseline"], ext_labels)
    assert r["macro"]["difference"] == pytest.approx(expected, abs=1e-6)
    assert r["units"] == [2, 4]  # BAGAN's runs clustered by generator seed, the baseline's by run
    cells = [c for row in table.values() for c in (row["macro"], *row["per_class"].values())]
    holm = multipletests([max(c["p_value"], 2 / params.n_bootstrap) for c in cells], method="holm")[1]
    np.testing.assert_allclose([c["p_adjusted"] for c in cells], holm, atol=1e-6)
    assert "Comparisons on ext, n = 1,000" in md
    assert "1000" in compare["tables"] and "ext" not in compare["tables"]  # internal tables unchanged
