"""`dvc repro` in a throwaway copy of the repository, on demo data."""

import json
import subprocess

from tests.helpers import make_project, project_env


def dvc(*args, cwd):
    return subprocess.run(["dvc", *args], cwd=cwd, capture_output=True, text=True, env=project_env())


def test_dvc_repro_prepare_runs_once_and_reports_metrics(tmp_path, demo_raw):
    project = make_project(tmp_path / "project")
    (project / "data").mkdir()
    (project / "data" / "raw").symlink_to(demo_raw)
    assert dvc("commit", "-f", "-q", "data.dvc", cwd=project).returncode == 0
    first = dvc("repro", "prepare", cwd=project)
    assert first.returncode == 0, first.stderr
    metrics = json.loads((project / "metrics" / "prepare.json").read_text())
    assert metrics["images"] == sum(metrics["per_class"].values()) > 400
    assert metrics["split_rule"] == "patient-stratified"
    assert "didn't change" in dvc("repro", "prepare", cwd=project).stdout
    shown = dvc("metrics", "show", "--json", cwd=project)
    assert "counts" in shown.stdout
