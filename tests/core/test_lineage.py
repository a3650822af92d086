"""Run tags and logged data sets carry the hashes DVC itself records in dvc.lock, under DVC's paths."""

import os
import subprocess

import numpy as np
import pytest
import yaml
from pydantic import BaseModel

from cxraug.core import lineage, tracking
from tests.helpers import project_env


class Settings(BaseModel):
    lr: float = 0.1


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    """A real DVC project whose stage depends on a directory and a file and writes a directory."""
    root = tmp_path_factory.mktemp("lineage")
    prepared = root / "data" / "prepared"
    prepared.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        np.savez(prepared / f"{split}.npz", images=rng.integers(0, 255, (4, 8, 8), dtype=np.uint8))
    (prepared / "split.csv").write_text("image,split\na.png,train\n")
    (root / "embedder.pt").write_bytes(b"weights")
    env = project_env()
    run = lambda *a: subprocess.run(a, cwd=root, env=env, check=True, capture_output=True)  # noqa: E731
    run("dvc", "init", "--no-scm", "-q")
    run("dvc", "config", "core.analytics", "false")
    cmd = "mkdir -p out && cp data/prepared/train.npz out/ && cp embedder.pt out/"
    run(
        "dvc",
        "stage",
        "add",
        "-q",
        "-n",
        "copy",
        "-d",
        "data/prepared",
        "-d",
        "embedder.pt",
        "-o",
        "out",
        cmd,
    )
    run("dvc", "repro", "-q")
    return root


def _lock(root):
    stage = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["copy"]
    return {e["path"]: e["md5"] for e in (*stage["deps"], *stage["outs"])}


def test_tags_equal_the_hashes_dvc_lock_records_for_directories_and_files(dvc_project, monkeypatch):
    monkeypatch.chdir(dvc_project)
    recorded = _lock(dvc_project)
    assert recorded["data/prepared"].endswith(".dir")  # DVC recorded a directory hash
    tags = lineage.input_tags(["data/prepared/train.npz", "data/prepared/val.npz", "embedder.pt", "out"])
    assert tags == {
        "input.data/prepared.md5": recorded["data/prepared"],  # a file inside: its directory's entry
        "input.embedder.pt.md5": recorded["embedder.pt"],
        "input.out.md5": recorded["out"],
    }


def test_outside_a_dvc_project_the_input_itself_is_hashed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"abc")
    assert lineage.input_tags(["d/x.bin"]) == {"input.d/x.bin.md5": "900150983cd24fb0d6963f7d28e17f72"}
    assert lineage.dvc_hash("d").endswith(".dir")


def test_a_changed_file_changes_its_directory_hash(tmp_path):
    (tmp_path / "a").write_text("1")
    before = lineage.dvc_hash(tmp_path)
    (tmp_path / "a").write_text("2")
    assert lineage.dvc_hash(tmp_path) != before


def test_a_stage_run_logs_its_splits_as_mlflow_datasets_with_dvc_hashes(
    dvc_project, monkeypatch, tracking_uri
):
    import mlflow

    monkeypatch.chdir(dvc_project)
    inputs = [f"data/prepared/{s}.npz" for s in ("train", "val", "test")]
    with tracking.stage_run(experiment="lineage", stage="copy", params=Settings(), inputs=inputs) as run_id:
        pass
    run = mlflow.get_run(run_id)
    recorded = _lock(dvc_project)
    assert run.data.tags["input.data/prepared.md5"] == recorded["data/prepared"]
    logged = {}
    for d in run.inputs.dataset_inputs:
        tags = {t.key: t.value for t in d.tags}
        logged[tags["mlflow.data.context"]] = (d.dataset.digest, d.dataset.source, tags)
    assert set(logged) == {"train", "val", "test"}
    digest, source, tags = logged["train"]
    assert digest == lineage.dvc_hash("data/prepared/train.npz") and "data/prepared/train.npz" in source
    assert tags["dvc.path"] == "data/prepared" and tags["dvc.md5"] == recorded["data/prepared"]
    experiment = mlflow.get_experiment(run.info.experiment_id)
    assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == "custom_model_development"
    assert os.environ["MLFLOW_TRACKING_URI"] == tracking_uri
