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

from cxraug.core import lineage
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


def _make_recipe(target: str) -> str:
    """The dvc command line of a Makefile target (`cd DIR && $(BIN)/dvc ...`)."""
    lines = (REPO / "Makefile").read_text().split(f"\n{target}:", 1)[1].splitlines()[1:]
    command = next(line for line in lines if "$(BIN)/dvc" in line)
    return command.split("$(BIN)/", 1)[1].strip()


# A pipeline small enough to run its generator stages in a test: one BAGAN replicate, 4 images a class.
ROUND_TRIP_PARAMS = """
generators: [bagan]
replicates: {generator_seeds: [0]}
prepare:
  image_size: 32
train_bagan: {latent_dim: 8, g_base: 4, d_base: 4, ae_epochs: 1, epochs: 1, batch_size: 64,
  grid_per_class: 2, device: cpu, precision: fp32}
synthesize:
  n_per_class: [4]
  filter: {per_gan: {bagan: {mode: none, threshold: null}}}
  device: cpu
  precision: fp32
"""
ROUND_TRIP = ("data/raw", "data/prepared", "models/bagan/seed0", "data/synthetic/bagan/seed0")


@pytest.mark.slow
def test_dvc_push_and_pull_round_trip_data_models_and_generated_images(tmp_path, demo_raw):
    """`make push` / `make pull`: the raw and prepared data, a trained generator and its images go to
    the remote, and come back byte for byte as dvc.lock records them."""
    project = make_project(tmp_path / "project", ROUND_TRIP_PARAMS, scm=True)
    shutil.copytree(demo_raw, project / "data" / "raw")
    env = {k: v for k, v in project_env().items() if k != "MLFLOW_TRACKING_URI"}
    assert dvc(project, "commit", "-f", "-q", "data.dvc", env=env).returncode == 0
    ran = dvc(project, "repro", "synthesize@bagan-0", env=env)  # prepare, train_bagan@0, synthesize
    assert ran.returncode == 0, ran.stderr[-2000:]
    config = (REPO / ".dvc" / "config").read_text()
    assert "remote = local" in config and "url = ../.dvc-remote" in config  # the documented default
    assert dvc(project, "remote", "add", "-d", "local", str(tmp_path / "remote"), env=env).returncode == 0
    before = {out: _tree_md5(project / out) for out in ROUND_TRIP}
    assert all(before.values()) and any(p.endswith(".png") for p in before["data/synthetic/bagan/seed0"])

    started = time.perf_counter()
    pushed = dvc(project, "push", env=env)  # what `make push` runs
    assert _make_recipe("push") == "dvc push" and _make_recipe("pull") == "dvc pull --allow-missing"
    assert pushed.returncode == 0, pushed.stderr
    for out in ROUND_TRIP:
        shutil.rmtree(project / out)
    shutil.rmtree(project / ".dvc" / "cache")
    pulled = dvc(project, "pull", "--allow-missing", env=env)  # what `make pull` runs (some stages never ran)
    seconds = time.perf_counter() - started
    assert pulled.returncode == 0, pulled.stderr

    assert {out: _tree_md5(project / out) for out in ROUND_TRIP} == before
    recorded = {
        o["path"]: o["md5"]
        for stage in yaml.safe_load((project / "dvc.lock").read_text())["stages"].values()
        for o in stage.get("outs", [])
    }
    recorded["data/raw"] = yaml.safe_load((project / "data.dvc").read_text())["outs"][0]["md5"]
    for out in ROUND_TRIP:  # DVC's directory hash of what came back is the one it recorded
        assert lineage.dvc_hash(project / out) == recorded[out], out
    assert "didn't change" in dvc(project, "repro", "synthesize@bagan-0", env=env).stdout
    files = sum(len(v) for v in before.values())
    print(f"push + pull of {', '.join(ROUND_TRIP)} ({files} files): {seconds:.1f}s")
