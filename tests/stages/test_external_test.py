"""The external_* stages: every seed scored, AUCs that sklearn agrees with, the MLflow link to the classify
run, the overlap guard, the report's table, and dvc.yaml's expansion over external.datasets."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from cxraug.classifier.predict import save_classifier
from cxraug.core.config import ClassifyParams, Params, PrepareParams, parse_params
from cxraug.core.errors import CxraugError
from cxraug.data.datasets import to_model_range
from cxraug.data.external import read_external
from cxraug.data.prepare import prepare
from cxraug.nets.vgg import build_vgg16
from cxraug.report.external import external_section, read_external_metrics
from cxraug.stages import external_test as stage
from tests.data.external_layouts import CLASSES, SIZE, build_folders, build_nih

SEEDS = (3, 4)


def _tiny(seed: int):
    torch.manual_seed(seed)
    return build_vgg16(len(CLASSES), image_size=SIZE, width=1 / 16).eval()


@pytest.fixture(scope="module")
def project(tmp_path_factory, tracking_uri):
    """A study (prepared from an NIH-layout set), a two-seed baseline model file as classify writes it,
    its classify metrics, and an external class-folder set."""
    root = tmp_path_factory.mktemp("project")
    study = build_nih(root / "raw")
    prepare(
        PrepareParams(classes=list(CLASSES), image_size=SIZE), study.path, root / "prepared", root / "p.json"
    )
    nets = [_tiny(s) for s in SEEDS]
    save_classifier(
        nets[0], root / "models" / "baseline.pt", CLASSES, [(SEEDS[1], nets[1].state_dict())], seed=SEEDS[0]
    )
    (root / "classify").mkdir()
    (root / "classify" / "baseline.json").write_text(json.dumps({"mlflow_run_id": "classify-run-42"}))
    external = build_folders(root / "ext")
    return root, study, external, nets


def _params(datasets=()) -> Params:
    return Params(
        prepare=PrepareParams(classes=list(CLASSES), image_size=SIZE),
        classify=ClassifyParams(seeds=list(SEEDS), bootstrap=200, device="cpu", precision="fp32"),
        external={"datasets": list(datasets)},
    )


def _paths(root: Path, data: Path, name: str = "ext") -> stage.Paths:
    return stage.Paths(
        "baseline", name, data, root / "models", root / "prepared", root / "classify", root / "s", root / "m"
    )


def test_every_seed_is_scored_and_the_run_links_to_classify(project):
    root, _, external, nets = project
    result = stage.run(_params([{"name": "ext", "path": str(external.path)}]), _paths(root, external.path))
    assert result.stage == "external_real@data0-baseline"

    saved = np.load(root / "s" / "ext" / "baseline.npz")
    metrics = json.loads((root / "m" / "ext" / "baseline.json").read_text())
    assert list(saved["seeds"]) == list(SEEDS) == metrics["seeds"]
    # the scores are those of both seeds' nets, on the images as read_external converts them
    read = read_external(external.path, CLASSES, SIZE)
    assert list(saved["image_index"]) == list(read.image_index)
    with torch.no_grad():
        x = to_model_range(torch.from_numpy(read.images))
        for s, net in enumerate(nets):
            assert np.allclose(saved["scores"][s], net(x).softmax(1).numpy(), atol=1e-5)
    # AUC with labels from the folder names, independently of the code under test
    labels = np.array([CLASSES.index(external.expected[str(i)]) for i in saved["image_index"]])
    for k, c in enumerate(CLASSES):
        sk = np.mean([roc_auc_score(labels == k, s[:, k]) for s in saved["scores"]])
        assert metrics["per_class_auc"][c] == pytest.approx(sk, abs=1e-5)
    assert metrics["bootstrap"]["unit"] == "image"

    run = mlflow.get_run(metrics["mlflow_run_id"])
    assert run.info.run_id == result.run_id
    assert mlflow.get_experiment(run.info.experiment_id).name == "external"
    assert run.data.tags["classify.run_id"] == "classify-run-42" == metrics["classify_run_id"]
    assert run.data.metrics["external_auc_macro"] == pytest.approx(metrics["macro_auc"])

    # the report's section: one table, rows = classes + macro, the JSON's numbers
    lines = "\n".join(external_section(read_external_metrics(root / "m"), ["baseline"], CLASSES)).splitlines()
    table = [line for line in lines if line.startswith("| ")]
    assert lines[0] == "## External validation" and "### ext" in lines
    assert table[0] == "| class | VGG16 |" and len(table) == 1 + len(CLASSES) + 1
    effusion = metrics["per_class_auc"]["Effusion"]
    lo, hi = metrics["per_class_auc_ci"]["Effusion"]
    assert f"{effusion:.3f}" in table[1 + CLASSES.index("Effusion")] and f"({lo:.3f}–{hi:.3f})" in "\n".join(
        table
    )


def test_the_studys_own_images_are_refused(project):
    root, study, _, _ = project
    with pytest.raises(CxraugError, match="must not contain the study's images"):
        stage.run(_params(), _paths(root, study.path, "leak"))
    assert not (root / "m" / "leak").exists()


def test_an_absent_class_is_undefined_in_the_report(project, tmp_path):
    root, _, _, _ = project
    two = build_folders(tmp_path / "two", classes=CLASSES[:2])
    result = stage.run(_params(), _paths(root, two.path, "two"))
    assert result.stage == "external_test"  # not in external.datasets: run by hand
    assert result.metrics["per_class_auc"]["Nodule"] is None and result.metrics["absent_classes"] == [
        "Nodule"
    ]
    lines = "\n".join(external_section(read_external_metrics(root / "m"), ["baseline"], CLASSES)).splitlines()
    nodule = next(line for line in lines[lines.index("### two") :] if line.startswith("| Nodule"))
    assert nodule == "| Nodule | undefined |"


def test_external_names_are_checked_in_params():
    with pytest.raises(CxraugError, match="names must be unique"):
        parse_params({"external": {"datasets": [{"name": "a", "path": "x"}, {"name": "a", "path": "y"}]}})
    with pytest.raises(CxraugError, match="external.datasets.0.name"):
        parse_params({"external": {"datasets": [{"name": "../up", "path": "x"}]}})


PARAMS_YAML = {
    "generators": ["bagan", "opengan"],
    "replicates": {"generator_seeds": [0]},
    "prepare": {"image_size": 32},
    "synthesize": {"n_per_class": [4]},
    "classify": {"seeds": [0, 1], "epochs": 1, "batch_size": 32, "width": 0.0625, "bootstrap": 200},
    "filter_sensitivity": {"gan": "bagan", "n_per_class": 4, "modes": ["none", "threshold"]},
}


def _project(tmp_path, datasets, raw=None):
    from tests.helpers import make_project

    params = {**PARAMS_YAML, "external": {"datasets": datasets}}
    return make_project(tmp_path / "project", yaml.safe_dump(params, sort_keys=False), raw=raw)


def test_dvc_expands_one_stage_per_set_and_variant_and_none_for_an_empty_list(tmp_path):
    from tests.helpers import dvc

    one = _project(tmp_path, [])
    listed = dvc(one, "stage", "list")
    assert listed.returncode == 0, listed.stderr
    assert "external_" not in listed.stdout and "report" in listed.stdout

    (tmp_path / "ext").mkdir()
    params = {**PARAMS_YAML, "external": {"datasets": [{"name": "hospital", "path": str(tmp_path / "ext")}]}}
    (one / "params.yaml").write_text(yaml.safe_dump(params))
    names = dvc(one, "stage", "list", "--name-only").stdout.split()
    external = sorted(n for n in names if n.startswith("external_"))
    assert external == sorted(
        [f"external_real@data0-{v}" for v in ("baseline", "weighted_loss", "oversample")]
        + ["external_aug@data0-4", "external_gan@data0-bagan-4", "external_gan@data0-opengan-4"]
    )
    # the report comes after every external stage (it reads metrics/external)
    upstream = dvc(one, "dag", "--md", "report")
    assert upstream.returncode == 0, upstream.stderr
    assert all(n in upstream.stdout for n in external)


@pytest.mark.slow  # prepare + classify + external-test in DVC subprocesses: 3.3 min measured on 2 busy cores
def test_dvc_repro_scores_the_external_set_after_the_classifier(tmp_path, demo_raw):
    from tests.cli.test_cli import cxraug
    from tests.helpers import dvc

    ext = build_folders(tmp_path / "ext", classes=("No Finding", "Effusion", "Nodule"))
    project = _project(tmp_path, [{"name": "hospital", "path": str(ext.path)}], raw=demo_raw)
    assert dvc(project, "commit", "-f", "-q", "data.dvc").returncode == 0
    ran = dvc(project, "repro", "external_real@data0-baseline")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.index("classify_real@baseline") < ran.stdout.index("external_real@data0-baseline")
    saved = np.load(project / "data/scores/external/hospital/baseline.npz")
    assert saved["scores"].shape[0] == 2  # both seeds of classify.seeds
    shown = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert "macro_auc" in files["metrics/external/hospital/baseline.json"]["data"]
    assert "didn't change" in dvc(project, "repro", "external_real@data0-baseline").stdout
    # the report (run directly: its full DVC chain would train both GANs) shows the table
    assert cxraug("report", cwd=project).returncode == 0
    results = (project / "reports/results.md").read_text()
    assert "## External validation" in results and "### hospital" in results


def test_the_verb_explains_itself_and_a_missing_model_is_one_line(tmp_path):
    from tests.cli.test_cli import cxraug

    assert "--name" in cxraug("external-test", "--help").stdout
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS_YAML))
    out = cxraug(
        "external-test", "--variant", "baseline", "--data", str(tmp_path), "--name", "x", cwd=tmp_path
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: models/classifier/baseline.pt: not found; run `cxraug classify --variant baseline` first"
    ]
