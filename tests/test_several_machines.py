"""The several-machine path with the real parts, on one machine: PostgreSQL, `mlflow server` (PostgreSQL
backend store, artifacts served through the server, bound to 127.0.0.1), and four `cxraug` processes
writing to them at once (two train-bagan replicates and two tune workers sharing one Optuna study in
PostgreSQL), as four machines would. Then everything is read back through the server: every run exactly
once, every logged step, every artifact byte for byte, every trial exactly once."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests import postgres
from tests.helpers import TINY_CLASSIFY, TINY_SYNTHESIZE, project_env

pytestmark = pytest.mark.slow

TRIALS_PER_WORKER = 2
SEEDS = (0, 1)
TINY = {
    "prepare": {"image_size": 32},
    "train_bagan": {
        "latent_dim": 12,
        "g_base": 8,
        "d_base": 8,
        "ae_epochs": 1,
        "epochs": 2,
        "batch_size": 32,
        "grid_per_class": 2,
        "log_every": 1,  # one logged point per step: the count to find on the server is the step count
        "device": "cpu",
        "precision": "fp32",
    },
    "synthesize": TINY_SYNTHESIZE,
    "classify": TINY_CLASSIFY,
    "tune": {
        "probe_per_class": 16,
        "pruner": {"enabled": False},
        "search": {"n_per_class": {"low": 0, "high": 50, "step": 50}},
        "overrides": {"classify": {"epochs": 2}, "train_bagan": {"epochs": 1}},
    },
}


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 at a free port, artifacts served (proxied) from `artifacts`; its URL
    once /health answers."""
    port = postgres.free_port()
    command = [
        *(sys.executable, "-m", "mlflow", "server"),
        *("--backend-store-uri", backend),
        *("--serve-artifacts", "--artifacts-destination", str(artifacts)),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
    ]
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=project_env())
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow server exited: {log.read_text()[-2000:]}"
            assert time.monotonic() < deadline, "mlflow server did not answer /health in 180 s"
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def cxraug(args: list[str], cwd: Path, tracking: str, log: Path) -> subprocess.Popen:
    env = {**project_env(), "MLFLOW_TRACKING_URI": tracking, "OMP_NUM_THREADS": "1"}
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cxraug.cli", *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(processes: dict[str, subprocess.Popen], logs: Path, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    for name, process in processes.items():
        try:
            process.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
        assert process.returncode == 0, f"{name}: {(logs / f'{name}.log').read_text()[-3000:]}"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def all_files(client, run_id: str, path: str | None = None) -> list[str]:
    found = []
    for item in client.list_artifacts(run_id, path):
        found += all_files(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_two_stages_and_two_tune_workers_share_one_server_and_one_study(demo_raw, tmp_path):
    import mlflow
    import optuna
    from optuna.trial import TrialState

    from cxraug.gans.bagan.train import EXPERIMENT as BAGAN_EXPERIMENT
    from cxraug.tune.study import open_storage
    from cxraug.tune.tracking import UID_TAG

    started = time.monotonic()
    logs = tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TINY))
    with postgres.throwaway_server() as server_url:
        # MLflow's SQLAlchemy 2.1 reads postgresql:// as psycopg 3; the `postgres` extra is psycopg2
        backend = postgres.create_database(server_url, "mlflow").replace(
            "postgresql://", "postgresql+psycopg2://"
        )
        storage = postgres.create_database(server_url, "optuna")
        with mlflow_server(backend, tmp_path / "served-artifacts", logs / "server.log") as tracking:
            up = time.monotonic()
            prepare = cxraug(["prepare", "--raw", str(demo_raw)], tmp_path, tracking, logs / "prepare.log")
            finish({"prepare": prepare}, logs)

            processes = {
                f"bagan{k}": cxraug(
                    [
                        *("train-bagan", "--seed", str(k)),
                        *("--out", f"models/bagan/seed{k}", "--metrics", f"metrics/bagan{k}.json"),
                        *("--checkpoints", f"checkpoints/bagan{k}"),
                    ],
                    tmp_path,
                    tracking,
                    logs / f"bagan{k}.log",
                )
                for k in SEEDS
            }
            processes |= {
                f"tune{w}": cxraug(
                    [
                        *("tune", "--gan", "bagan", "--n-trials", str(TRIALS_PER_WORKER)),
                        *("--storage", storage, "--study-name", "shared", "--out", f"tuning{w}"),
                    ],
                    tmp_path,
                    tracking,
                    logs / f"tune{w}.log",
                )
                for w in range(2)
            }
            finish(processes, logs)
            ran = time.monotonic()

            client = mlflow.MlflowClient(tracking)
            # ---- the two stage replicates: one run each, every step, every file
            (prepared,) = client.search_runs([client.get_experiment_by_name("prepare").experiment_id])
            assert prepared.data.metrics["count.train.no_finding"] > 0
            experiment = client.get_experiment_by_name(BAGAN_EXPERIMENT)
            runs = client.search_runs([experiment.experiment_id], max_results=100)
            assert sorted(r.data.params["seed"] for r in runs) == [str(k) for k in SEEDS], "one run each"
            assert all("train" in {i.dataset.name for i in r.inputs.dataset_inputs} for r in runs)
            for k in SEEDS:
                metrics = json.loads((tmp_path / f"metrics/bagan{k}.json").read_text())
                run = client.get_run(metrics["mlflow_run_id"])
                assert run.info.status == "FINISHED" and run.data.params["seed"] == str(k)
                assert run.info.artifact_uri.startswith("mlflow-artifacts:/"), "served, not a local path"
                for key in ("gan/d_loss", "gan/g_loss"):
                    steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
                    assert sorted(steps) == list(range(1, metrics["gan_steps"] + 1)), (k, key)
                assert len(client.get_metric_history(run.info.run_id, "ae/loss")) == metrics["ae_steps"]

                files = all_files(client, run.info.run_id)
                grids = [f for f in files if "samples~by_class+step+" in f and f.endswith(".png")]
                assert len(grids) == TINY["train_bagan"]["epochs"] + 1  # the decoder's, then each epoch
                fetched = Path(client.download_artifacts(run.info.run_id, "bagan", str(tmp_path / f"dl{k}")))
                local = tmp_path / f"models/bagan/seed{k}"
                for name in ("generator.pt", "discriminator.pt", "autoencoder.pt"):
                    assert md5(fetched / name) == md5(local / name), (k, name)
                grid = Path(client.download_artifacts(run.info.run_id, grids[-1], str(tmp_path / f"g{k}")))
                assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

            # ---- the shared study: every trial once, each with its one MLflow run
            study = optuna.load_study(study_name="shared", storage=open_storage(storage))
            trials = study.trials
            assert [t.number for t in trials] == list(range(2 * TRIALS_PER_WORKER))
            assert all(t.state == TrialState.COMPLETE for t in trials)
            tune_experiment = client.get_experiment_by_name("tune")
            uid = study.user_attrs["cxraug.study_uid"]
            tuned = client.search_runs([tune_experiment.experiment_id], f"tags.`{UID_TAG}` = '{uid}'")
            parents = [r for r in tuned if r.data.tags["cxraug.role"] == "study"]
            children = [r for r in tuned if r.data.tags["cxraug.role"] == "trial"]
            assert len(parents) == 1, "both workers joined one study run"
            assert sorted(int(c.data.tags["optuna.trial_number"]) for c in children) == [
                t.number for t in trials
            ]
            by_id = {c.info.run_id: c for c in children}
            for trial in trials:
                child = by_id[trial.user_attrs["mlflow_run_id"]]
                assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
                assert child.data.metrics["value"] == pytest.approx(trial.value)
                history = client.get_metric_history(child.info.run_id, "intermediate_value")
                assert sorted(m.step for m in history) == sorted(trial.intermediate_values)
                stage_runs = client.search_runs(
                    [tune_experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{child.info.run_id}'"
                )
                trained_a_gan = trial.params["n_per_class"] > 0
                assert [r.data.tags["dvc.stage"] for r in stage_runs] == ["train_bagan"] * trained_a_gan
                if trained_a_gan:
                    assert "synthetic_by_class.png" in all_files(client, child.info.run_id)
            for w in range(2):
                said = (logs / f"tune{w}.log").read_text()
                assert f"this worker ran {TRIALS_PER_WORKER} trials" in said, said[-1000:]
    print(
        f"\nservers up in {up - started:.0f} s; prepare + 2 stages + 2 tune workers in {ran - up:.0f} s; "
        f"total {time.monotonic() - started:.0f} s"
    )
