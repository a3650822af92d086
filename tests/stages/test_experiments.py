"""The project as a git + DVC repository (what `make demo` builds): queued experiments run in parallel
into one MLflow store, and a DVC remote round-trips the pipeline's outputs."""

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, dvc, make_project, project_env


def _git(project, *args):
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True)


def _tree_md5(root):
    return {
        p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def git_project(tmp_path, demo_raw):
    """A git + DVC project whose baseline ran `prepare` and is committed; its own MLflow store."""
    project = make_project(tmp_path / "project", scm=True)
    shutil.copytree(demo_raw, project / "data" / "raw")
    env = {k: v for k, v in project_env().items() if k != "MLFLOW_TRACKING_URI"}  # the project's store
    assert dvc(project, "commit", "-f", "-q", "data.dvc", env=env).returncode == 0
    first = dvc(project, "repro", "prepare", env=env)
    assert first.returncode == 0, first.stderr
    _git(project, "add", "-A")
    _git(project, "commit", "-q", "-m", "baseline")
    return project, env


@pytest.mark.slow
def test_two_queued_experiments_run_in_parallel_into_one_mlflow_store(git_project):
    import mlflow

    project, env = git_project
    for seed in (1, 2):
        queued = dvc(project, "exp", "run", "--queue", "-S", f"prepare.seed={seed}", "prepare", env=env)
        assert queued.returncode == 0, queued.stderr
    started = time.perf_counter()
    assert dvc(project, "queue", "start", "-j", "2", env=env).returncode == 0
    while time.perf_counter() - started < 600:
        status = dvc(project, "queue", "status", env=env).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(dvc(project, "exp", "show", "--json", env=env).stdout)
    seeds = set()
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                seeds.add(rev["data"]["params"]["params.yaml"]["data"]["prepare"]["seed"])
    assert seeds == {1, 2}

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    try:
        runs = mlflow.search_runs(experiment_names=["prepare"], output_format="list")
    finally:
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", ""))
    assert sorted(r.data.params["seed"] for r in runs) == ["0", "1", "2"]  # baseline + both experiments
    raw_md5 = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare"]["deps"][0]["md5"]
    assert {r.data.tags["input.data/raw.md5"] for r in runs} == {raw_md5}  # as dvc.lock records it
    stages = {r.data.tags["dvc.stage"] for r in runs}
    assert stages == {"prepare"}
    for run in runs:  # artifacts live in the project's store, not in DVC's deleted copies of it
        artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
        assert artifacts.is_relative_to(project / "mlruns") and artifacts.is_dir(), artifacts


@pytest.mark.slow
def test_dvc_push_and_pull_round_trip_the_outputs(git_project, tmp_path):
    project, env = git_project
    remote = tmp_path / "remote"
    config = (REPO / ".dvc" / "config").read_text()
    assert "remote = local" in config and "url = ../.dvc-remote" in config  # the documented default
    assert dvc(project, "remote", "add", "-d", "local", str(remote), env=env).returncode == 0
    before = _tree_md5(project / "data" / "prepared")
    started = time.perf_counter()
    pushed = dvc(project, "push", "data.dvc", "prepare", env=env)  # what has run so far
    assert pushed.returncode == 0, pushed.stderr
    before_raw = _tree_md5(project / "data" / "raw")
    shutil.rmtree(project / "data" / "prepared")
    shutil.rmtree(project / "data" / "raw")
    shutil.rmtree(project / ".dvc" / "cache")
    pulled = dvc(project, "pull", "data.dvc", "prepare", env=env)
    seconds = time.perf_counter() - started
    assert pulled.returncode == 0, pulled.stderr
    assert _tree_md5(project / "data" / "prepared") == before
    assert _tree_md5(project / "data" / "raw") == before_raw
    assert "didn't change" in dvc(project, "repro", "prepare", env=env).stdout
    print(f"push + pull of data/raw and data/prepared: {seconds:.1f}s")
