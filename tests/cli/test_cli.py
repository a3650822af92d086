"""The CLI as a user meets it: help texts, one-line errors with exit status 2, and real stage runs."""

import subprocess
import sys

import pytest

from tests.helpers import project_env

VERBS = ["inspect", "prepare", "demo-data", "params", "download nih", "download medmnist"]


def cxraug(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "cxraug.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=project_env(),
    )


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_explains_itself(verb):
    out = cxraug(*verb.split(), "--help")
    assert out.returncode == 0
    assert "Usage" in out.stdout and len(out.stdout) > 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "/no/such/dir"], "no such directory"),
        (["prepare", "--raw", "/no/such/dir"], "no such directory"),
        (["params", "--params", "/no/params.yaml"], "no such params file"),
        (["download", "nih", "/tmp/x", "--archives", "13"], "archives 1 to 12"),
        (["download", "nih", "/tmp/x", "--archives", "one"], "use numbers and ranges"),
        (["bench", "all", "--skip", "gpu"], "unknown part gpu"),
    ],
)
def test_user_errors_are_one_line_without_traceback(args, message, tmp_path):
    (tmp_path / "params.yaml").write_text("prepare: {}\n")
    out = cxraug(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    error_lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_bad_params_file_names_the_key(tmp_path):
    (tmp_path / "params.yaml").write_text("prepare:\n  test_fraction: -0.2\n")
    out = cxraug("prepare", cwd=tmp_path)
    assert out.returncode == 2 and "prepare.test_fraction" in out.stderr


def test_inspect_real_metadata_prints_the_paper_counts(nih_metadata):
    out = cxraug("inspect", str(nih_metadata))
    assert out.returncode == 0
    for figure in ("60,361", "9,547", "4,215", "3,955", "2,705", "112,120 missing"):
        assert figure in out.stdout


def test_prepare_logs_counts_and_class_grids_to_mlflow(demo_raw, tmp_path):
    import mlflow

    (tmp_path / "params.yaml").write_text("prepare:\n  seed: 1\n")
    out = cxraug("prepare", "--raw", str(demo_raw), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    run_id = out.stdout.strip().rsplit(" ", 1)[-1]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = client.get_run(run_id)
    assert run.data.tags["dvc.stage"] == "prepare" and len(run.data.tags["git.commit"]) > 0
    assert run.data.params["seed"] == "1"
    assert run.data.metrics["count.train.no_finding"] > run.data.metrics["count.train.nodule"] > 0
    grids = {a.path for a in client.list_artifacts(run_id, "samples")}
    assert {"samples/no_finding.png", "samples/nodule.png"} <= grids
