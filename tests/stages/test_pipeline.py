"""`dvc repro` in a throwaway copy of the repository, on demo data."""

import json

from tests.helpers import dvc, make_project


def test_dvc_repro_prepare_runs_once_and_reports_metrics(tmp_path, demo_raw):
    project = make_project(tmp_path / "project")
    (project / "data").mkdir()
    (project / "data" / "raw").symlink_to(demo_raw)
    assert dvc(project, "commit", "-f", "-q", "data.dvc").returncode == 0
    first = dvc(project, "repro", "prepare")
    assert first.returncode == 0, first.stderr
    metrics = json.loads((project / "metrics" / "prepare.json").read_text())
    assert metrics["images"] == sum(metrics["per_class"].values()) > 400
    assert metrics["split_rule"] == "patient-stratified"
    assert "didn't change" in dvc(project, "repro", "prepare").stdout
    shown = dvc(project, "metrics", "show", "--json", "metrics/prepare.json")  # details: not a DVC metric
    assert "counts" in shown.stdout
