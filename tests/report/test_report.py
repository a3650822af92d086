"""The report on small planted metrics/scores: tables, bold, CIs, paper values, missing variants, figures,
the paired comparison and the DVC stage."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cxraug.core.config import DEFAULT_CLASSES, ReportParams
from cxraug.core.runtime import atomic_savez
from cxraug.report.inputs import Inputs, VariantMetrics
from cxraug.report.tables import auc_table
from cxraug.stages.report import make_report

CLASSES = tuple(DEFAULT_CLASSES)
N_TEST, SEEDS = 300, [0, 1, 2]
# how strongly each variant's scores separate the classes: a planted ranking (bigger = better AUC)
STRENGTH = {
    "baseline": 1.0,
    "weighted_loss": 1.1,
    "oversample": 1.0,  # identical scores to the baseline: no difference to find
    "standard_aug_1000": 1.2,
    "bagan_1000": 3.0,  # clearly best everywhere
    "opengan_1000": 0.9,
    "standard_aug_3000": 1.3,
    "bagan_3000": 1.1,
    "diffusion_1000": 1.05,
    "diffusion_3000": 1.15,
}
MISSING = "opengan_3000"


def planted_scores(variant: str, labels: np.ndarray) -> np.ndarray:
    """Softmax of strength x one-hot(label) + noise, per seed; the noise depends only on the seed, so
    variants of equal strength have identical scores."""
    out = []
    for s in SEEDS:
        noise = np.random.default_rng(100 + s).normal(size=(len(labels), len(CLASSES)))
        logits = STRENGTH[variant] * np.eye(len(CLASSES))[labels] + noise
        out.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    return np.stack(out).astype(np.float32)


def metrics_from(variant: str, scores: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    per_seed = np.array([[roc_auc_score(labels == k, s[:, k]) for k in range(len(CLASSES))] for s in scores])
    mean, std = per_seed.mean(0), per_seed.std(0, ddof=1)
    macro = per_seed.mean(1)
    return {
        "variant": variant,
        "classes": list(CLASSES),
        "seeds": SEEDS,
        "per_class_auc": dict(zip(CLASSES, mean.tolist(), strict=True)),
        "per_class_auc_std": dict(zip(CLASSES, std.tolist(), strict=True)),
        "per_class_auc_ci": {c: [m - 0.03, m + 0.02] for c, m in zip(CLASSES, mean.tolist(), strict=True)},
        "macro_auc": float(macro.mean()),
        "macro_auc_std": float(macro.std(ddof=1)),
        "macro_auc_ci": [float(macro.mean()) - 0.02, float(macro.mean()) + 0.02],
        "best_epoch": {str(s): 3 for s in SEEDS},
        "train_images": {
            c: 100 * (i + 1) + (1000 if "_1000" in variant else 0) for i, c in enumerate(CLASSES)
        },
        "mlflow_run_id": f"run-{variant}",
        "network": "VGG16-BN, pooled head",
    }


def make_inputs(root: Path) -> Inputs:
    """A project tree with planted metrics/scores, a real-looking train split and one GAN's images."""
    rng = np.random.default_rng(0)
    labels = np.arange(N_TEST) % len(CLASSES)
    patients = np.array([f"p{i // 2}" for i in range(N_TEST)])  # two images per patient
    for variant in STRENGTH:
        scores = planted_scores(variant, labels)
        atomic_savez(
            root / "data/scores" / f"{variant}.npz",
            scores=scores,
            labels=labels,
            patient_ids=patients,
            seeds=np.array(SEEDS),
            classes=np.array(CLASSES),
            image_index=np.array([f"{i:05d}.png" for i in range(N_TEST)]),
        )
        path = root / "metrics/classify" / f"{variant}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics_from(variant, scores, labels)))
    n_train = 100
    atomic_savez(
        root / "data/prepared/train.npz",
        images=rng.integers(0, 256, (n_train, 16, 16), dtype=np.uint8),
        labels=np.arange(n_train) % len(CLASSES),
        patient_ids=np.array([f"t{i}" for i in range(n_train)]),
        image_index=np.array([f"t{i}.png" for i in range(n_train)]),
        classes=np.array(CLASSES),
    )
    gan = root / "data/synthetic/bagan/seed0"
    rows = ["file,class,label,score"]
    for k, c in enumerate(CLASSES):
        (gan / f"c{k}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16), 40 * k, dtype=np.uint8)).save(gan / f"c{k}/{i:05d}.png")
            rows.append(f"c{k}/{i:05d}.png,{c},{k},0.9")
    (gan / "index.csv").write_text("\n".join(rows) + "\n")
    return Inputs(
        root / "metrics/classify", root / "data/scores", root / "data/synthetic", root / "data/prepared"
    )


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the first table after `heading` (header row first, separator row left out)."""
    lines = markdown.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = itertools.takewhile(lambda line: line.startswith("|"), lines[start:])
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in table if not ln.startswith("|---")]


@pytest.fixture(scope="module")
def report(tmp_path_factory, tracking_uri):
    root = tmp_path_factory.mktemp("project")
    inputs = make_inputs(root)
    (inputs.classify_metrics / f"{MISSING}.json").unlink(missing_ok=True)
    params = ReportParams(n_bootstrap=4000, grid_images=3)  # 2/B x 72 cells < 0.05: Holm can mark
    result = make_report(params, [1000, 3000], inputs, root / "reports", root / "metrics/compare.json")
    return root, result, (root / "reports/results.md").read_text()


def test_tables_have_every_class_and_variant_with_cis_and_paper_values(report):
    _, _, md = report
    rows = table_rows(md, "## Augmenting 1,000 images per class")
    header = rows[0]
    assert header == [
        "class", "VGG16-BN, pooled head", "*paper*", "+ standard aug", "*paper*", "+ BAGAN", "*paper*",
        "+ NewGAN", "*paper*", "+ Diffusion", "weighted loss", "oversample",
    ]  # fmt: skip
    assert [r[0] for r in rows[1:]] == [*CLASSES, "macro AUC"]
    ci = re.compile(r"^\**\d\.\d{3}\**†? ± \d\.\d{3} \(\d\.\d{3}–\d\.\d{3}\)$")
    for row in rows[1:]:
        ours = [row[i] for i, h in enumerate(header) if i and h != "*paper*"]
        assert all(ci.match(cell) for cell in ours), ours
    no_finding = dict(zip(header[:3], rows[1][:3], strict=True))
    assert rows[1][header.index("+ BAGAN") + 1] == "*0.726*"  # published, beside our BAGAN
    assert rows[1][header.index("+ NewGAN") + 1] == "*0.723*"
    assert no_finding["*paper*"] == "*0.713*"
    assert rows[-1][2] == "—"  # the paper has no macro AUC


def test_the_best_value_of_each_row_is_bold_and_only_it(report):
    root, _, md = report
    for n, heading in [
        (1000, "## Augmenting 1,000 images per class"),
        (3000, "## Augmenting 3,000 images per class"),
    ]:
        rows = table_rows(md, heading)
        header = rows[0]
        for row in rows[1:]:
            means = {}
            for h, cell in zip(header, row, strict=True):
                if h not in ("class", "*paper*") and cell != "—":
                    means[h] = float(cell.replace("*", "").split("†")[0].split(" ")[0])
            bold = {h for h, cell in zip(header, row, strict=True) if cell.startswith("**")}
            assert bold == {h for h, m in means.items() if m == max(means.values())}
        if n == 1000:  # the planted winner
            assert all(row[header.index("+ BAGAN")].startswith("**") for row in rows[1:])


def test_ties_at_the_shown_precision_are_all_bold():
    def metrics(name, value):
        return VariantMetrics(
            name, ("A",), {"A": value, "macro AUC": value}, {"A": 0.0, "macro AUC": 0.0},
            {"A": (0.6, 0.8), "macro AUC": (0.6, 0.8)}, [0],
        )  # fmt: skip

    table = auc_table(
        7, {"baseline": metrics("baseline", 0.7312), "oversample": metrics("x", 0.7309)}, [], ("A",)
    )
    row = table.splitlines()[2]
    assert row.count("**0.731**") == 2 and "—" in row  # missing variants are dashes, not dropped


def test_a_missing_variant_is_a_dash_with_a_note_never_dropped(report):
    _, result, md = report
    rows = table_rows(md, "## Augmenting 3,000 images per class")
    column = rows[0].index("+ NewGAN")
    assert all(row[column] == "—" for row in rows[1:])
    assert MISSING in result.missing and f"`{MISSING}`: " in md.split("## Missing")[1]
    assert "The paper's 3000-image table has no plain VGG16 column" in md
    assert rows[1][rows[0].index("+ NewGAN") + 1] == "*0.736*"  # the paper value still appears


def _row(rows: dict[str, dict], a: str, b: str) -> dict:
    return rows[f"{a} - {b}"]


def test_every_planned_comparison_is_made_with_adjusted_p_values(report):
    from statsmodels.stats.multitest import multipletests

    root, _, md = report
    compare = json.loads((root / "metrics/compare.json").read_text())
    assert compare["adjust"] == "holm" and set(compare["tables"]) == {"1000", "3000"}
    table = compare["tables"]["1000"]
    pairs = {(r["a"], r["b"]) for r in table.values()}
    assert {
        ("bagan_1000", "baseline"), ("opengan_1000", "baseline"), ("bagan_1000", "standard_aug_1000"),
        ("opengan_1000", "standard_aug_1000"), ("bagan_1000", "opengan_1000"), ("oversample", "baseline"),
    } <= pairs  # fmt: skip
    assert all(MISSING not in key for key in compare["tables"]["3000"])
    better = _row(table, "bagan_1000", "baseline")
    assert better["macro"]["difference"] > 0.05 and better["macro"]["p_adjusted"] < 0.05
    assert all(c["ci_low"] > 0 for c in better["per_class"].values())
    same = _row(table, "oversample", "baseline")
    # identical scores, but two independently trained variants: the estimate is 0, its interval spans
    # the run-level spread of both (not a point), and nothing is marked
    assert same["macro"]["difference"] == 0 and same["macro"]["ci_low"] < 0 < same["macro"]["ci_high"]
    assert same["macro"]["p_value"] > 0.5 and same["macro"]["p_adjusted"] == 1
    # Holm over every cell of the table, recomputed independently; † follows the ADJUSTED p only
    cells = [c for r in table.values() for c in (r["macro"], *r["per_class"].values())]
    # a bootstrap p of 0 says p < 2 / B: Holm multiplies that bound
    floor = next(iter(table.values()))["p_resolution"]
    holm = multipletests([max(c["p_value"], floor) for c in cells], method="holm")[1]
    np.testing.assert_allclose([c["p_adjusted"] for c in cells], holm, atol=1e-6)
    assert all(c["significant"] == (c["p_adjusted"] < 0.05) for c in cells)
    assert all(c["p_adjusted"] >= floor for c in cells)
    assert compare["missing"] == [MISSING] and compare["mlflow_run_id"]
    rows = table_rows(md, "### Comparisons, n = 1,000")
    bagan = next(r for r in rows if r[0] == "`bagan_1000` − `baseline`")
    marked = [better["per_class"][c]["significant"] for c in CLASSES] + [better["macro"]["significant"]]
    assert [("†" in cell) for cell in bagan[1:]] == marked and sum(marked) >= 4 and marked[-1]
    oversample = next(r for r in rows if r[0] == "`oversample` − `baseline`")
    assert all(cell.startswith("+0.000 (-0.") and "†" not in cell for cell in oversample[1:])


def test_figures_are_written_and_linked(report):
    root, result, md = report
    names = {p.name for p in (root / "reports/figures").iterdir()}
    assert names == {
        "auc_n1000.png", "auc_n3000.png", "roc_n1000.png", "roc_n3000.png", "real_vs_synthetic.png",
        "class_distribution.png",
    }  # fmt: skip
    for name in names:
        image = Image.open(root / "reports/figures" / name)
        assert image.size[0] > 300 and image.size[1] > 200
        assert f"(figures/{name})" in md
        # a blank canvas would be one colour; a drawn figure has many
        assert len(np.unique(np.asarray(image.convert("L")))) > 20


def test_real_vs_synthetic_shows_the_first_accepted_images_of_each_gan(report, tmp_path):
    from cxraug.data.datasets import load_split
    from cxraug.report.figures import real_vs_synthetic
    from cxraug.report.inputs import read_synthetic_indexes

    root, _, _ = report
    indexes = read_synthetic_indexes(root / "data/synthetic")
    assert list(indexes) == ["bagan/seed0"]
    fig = real_vs_synthetic(
        load_split(root / "data/prepared", "train"), root / "data/synthetic", indexes, 3, 0
    )
    panel = np.asarray(
        fig.axes[2 * 2 + 1].get_images()[0].get_array()
    )  # class 2's synthetic images: flat grey 80
    assert panel.shape[0] == 16 + 4 and np.median(panel) == 80


def test_report_stage_under_dvc_gives_metrics_and_plots(tmp_path, tracking_uri):
    from tests.helpers import REPO, dvc, make_project, project_env

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["report"] |= {"n_bootstrap": 100, "grid_images": 2}
    project = make_project(tmp_path / "project", yaml.safe_dump(params, sort_keys=False))
    make_inputs(project)
    (project / "metrics/gan").mkdir(parents=True)  # a dependency; no GAN metrics yet: dashes
    (project / "metrics/train_bagan").mkdir(parents=True)  # nor D on val yet
    (project / "metrics/synthesize").mkdir(parents=True)  # nor a filter-sensitivity set
    roc = project / "plots/roc"
    roc.mkdir(parents=True)
    roc.joinpath("baseline.csv").write_text("class,fpr,tpr\nNodule,0,0\nNodule,0.5,0.8\nNodule,1,1\n")
    env = project_env()
    env["MLFLOW_TRACKING_URI"] = tracking_uri  # the session's store: its schema already exists

    run = dvc(project, "repro", "--single-item", "report", env=env)
    assert run.returncode == 0, run.stderr + run.stdout
    assert (project / "reports/results.md").is_file() and (
        project / "reports/figures/auc_n3000.png"
    ).is_file()
    markdown = (project / "reports/results.md").read_text()
    assert "## GAN quality and memorisation" in markdown and "`dvc repro gan_metrics@opengan-<k>`" in markdown
    shown = json.loads(dvc(project, "metrics", "show", "--json", "metrics/compare.json", env=env).stdout)
    assert "bagan_1000 - baseline" in json.dumps(shown) and "p_adjusted" in json.dumps(shown)
    plots = dvc(project, "plots", "show", "--json", env=env)
    assert plots.returncode == 0, plots.stderr
    assert "reports/figures/auc_n3000.png" in plots.stdout  # PNG figures: no vega, no CDN script


def test_a_report_before_any_variant_ran_is_all_dashes_and_says_so(tmp_path, tracking_uri):
    atomic_savez(
        tmp_path / "data/prepared/train.npz",
        images=np.zeros((10, 16, 16), dtype=np.uint8),
        labels=np.arange(10) % len(CLASSES),
        patient_ids=np.array([f"t{i}" for i in range(10)]),
        image_index=np.array([f"t{i}.png" for i in range(10)]),
        classes=np.array(CLASSES),
    )
    inputs = Inputs(tmp_path / "m", tmp_path / "s", tmp_path / "synthetic", tmp_path / "data/prepared")
    result = make_report(ReportParams(n_bootstrap=100), [1000], inputs, tmp_path / "out", tmp_path / "c.json")
    md = result.markdown.read_text()
    rows = table_rows(md, "## Augmenting 1,000 images per class")
    assert all(
        cell == "—"
        for row in rows[1:]
        for i, cell in enumerate(row)
        if rows[0][i] not in ("class", "*paper*")
    )
    assert len(result.missing) == 7 and md.count("not found, shown as —") == 7
    assert json.loads((tmp_path / "c.json").read_text())["tables"] == {"1000": {}}


def test_the_report_covers_the_generators_of_the_study_not_every_registered_one(tmp_path, tracking_uri):
    """params.yaml `generators: [bagan, opengan]` (the demo): no Diffusion column, comparison or figure
    entry, and its variants are not listed as missing (they were never planned)."""
    inputs = make_inputs(tmp_path)
    result = make_report(
        ReportParams(n_bootstrap=100, grid_images=3),
        [1000, 3000],
        inputs,
        tmp_path / "reports",
        tmp_path / "c.json",
        generators=["opengan", "bagan"],  # the registry's order wins
    )
    md = result.markdown.read_text()
    header = table_rows(md, "## Augmenting 1,000 images per class")[0]
    assert [h for h in header if h.startswith("+ ")] == ["+ standard aug", "+ BAGAN", "+ NewGAN"]
    assert not any(v.startswith("diffusion") for v in [*result.missing, *result.present])
    pairs = json.loads((tmp_path / "c.json").read_text())["tables"]["1000"]
    assert pairs and not any("diffusion" in key for key in pairs)
    assert "bagan_1000 - opengan_1000" in pairs
