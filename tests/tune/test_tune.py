"""cxraug tune: shared studies (journal, sqlite, PostgreSQL) across worker processes, MLflow's parent and
nested runs, pruning, failures, interruption and resumption, the best-params file, and the real objective
on tiny settings (never the test split)."""

from __future__ import annotations

import multiprocessing
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from cxraug.core.config import (
    Params,
    PrepareParams,
    TuneParams,
    TunePrunerParams,
    load_params,
    merge,
    parse_params,
)
from cxraug.core.errors import CxraugError
from cxraug.tune.study import make_sampler, open_storage, open_study, storage_label
from cxraug.tune.tracking import UID_TAG
from cxraug.tune.worker import TrialFailed, best_overlay, dvc_command, report, run_worker, write_best
from tests import postgres, tune_workers
from tests.helpers import TINY_CLASSIFY, TINY_SYNTHESIZE

REPO = Path(__file__).resolve().parents[2]
SPAWN = multiprocessing.get_context("spawn")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mlflow_store(tracking_uri):
    """The session's MLflow store, created before worker processes open it together."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.MlflowClient().search_experiments()
    return tracking_uri


def study_runs(uid: str) -> tuple[list, list]:
    """(study runs, trial runs) of the study with this uid, in the current tracking store."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("tune")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{UID_TAG}` = '{uid}'", max_results=1000)
    by_role = {"study": [], "trial": []}
    for run in runs:
        by_role[run.data.tags["cxraug.role"]].append(run)
    return by_role["study"], sorted(by_role["trial"], key=lambda r: int(r.data.tags["optuna.trial_number"]))


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


# --------------------------------------------------------------------------------------------- postgres


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server (tests/postgres.py); skipped when its binaries or driver are absent."""
    with postgres.throwaway_server() as url:
        yield url


@pytest.fixture(params=["journal", "sqlite", "postgresql"])
def shared_storage(request, tmp_path) -> str:
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.log'}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return request.getfixturevalue("postgres_url")


# ------------------------------------------------------------------------------------------ shared study


def test_two_worker_processes_finish_their_trials_in_one_study(shared_storage, tmp_path, mlflow_store):
    n, name = 4, f"shared-{tmp_path.name}"
    records = [tmp_path / f"worker{i}.txt" for i in range(2)]
    workers = [
        SPAWN.Process(
            target=tune_workers.trivial_worker,
            args=(shared_storage, name, n, mlflow_store, str(tmp_path / "tuning"), str(record)),
        )
        for record in records
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=300)
    assert [w.exitcode for w in workers] == [0, 0]

    study = load(shared_storage, name)
    trials = study.trials
    assert [t.number for t in trials] == list(range(2 * n))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    ran = [[int(line) for line in r.read_text().split()] for r in records]
    assert sorted(ran[0] + ran[1]) == list(range(2 * n)), "every trial ran exactly once"
    assert [len(r) for r in ran] == [n, n]
    assert len({t.params["lr_g"] for t in trials}) == 2 * n, "workers must not repeat each other's draws"

    parents, children = study_runs(study.user_attrs["cxraug.study_uid"])
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["optuna.study_name"] == name
    assert [int(c.data.tags["optuna.trial_number"]) for c in children] == list(range(2 * n))
    for child, trial in zip(children, trials, strict=True):
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["optuna.state"] == "COMPLETE"
        assert child.data.params == {k: str(v) for k, v in trial.params.items()}
        assert child.data.metrics["value"] == pytest.approx(trial.value)
        assert trial.user_attrs["mlflow_run_id"] == child.info.run_id
    best = yaml.safe_load((tmp_path / "tuning" / "best_bagan.yaml").read_text())
    with_gan = [t for t in trials if t.params["n_per_class"] > 0]
    assert best["best_trial"] == max(with_gan, key=lambda t: t.value).number
    assert best["trials"]["complete"] == 2 * n


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_worker_leaves_the_study_consistent_and_resumable(sig, tmp_path, mlflow_store):
    storage, name = f"sqlite:///{tmp_path / 'optuna.db'}", "interrupted"
    started = tmp_path / "trial1.started"
    worker = SPAWN.Process(
        target=tune_workers.sleepy_worker,
        args=(storage, name, mlflow_store, str(tmp_path / "tuning"), str(started)),
    )
    worker.start()
    deadline = time.monotonic() + 120
    while not started.exists():
        assert worker.is_alive() and time.monotonic() < deadline, "the worker never reached trial 1"
        time.sleep(0.1)
    os.kill(worker.pid, sig)
    worker.join(timeout=60)
    assert worker.exitcode not in (0, None)

    study = load(storage, name)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]
    _, children = study_runs(study.user_attrs["cxraug.study_uid"])
    assert [c.data.tags["optuna.state"] for c in children] == ["COMPLETE", "FAIL"]
    assert children[1].info.status == "KILLED"
    assert (tmp_path / "tuning" / "best_bagan.yaml").is_file(), "the best so far is written on the way out"

    run_worker(
        tune_workers.quick_objective(),
        tune_workers.NO_PRUNING,
        gan="bagan",
        storage=storage,
        study_name=name,
        n_trials=2,
        out_dir=tmp_path / "tuning",
    )
    study = load(storage, name)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL] + [
        TrialState.COMPLETE
    ] * 2
    parents, children = study_runs(study.user_attrs["cxraug.study_uid"])
    assert len(parents) == 1 and len(children) == 4, "the resumed worker joins the same MLflow study run"


# ------------------------------------------------------------------------------- pruning and failures


def test_pruning_stops_a_clearly_worse_trial_and_a_failed_trial_does_not_stop_the_study(
    tmp_path, mlflow_store
):
    from cxraug.core.tracking import stage_run

    settings = TuneParams(pruner=TunePrunerParams(n_startup_trials=2, n_warmup_steps=0))

    def objective(trial) -> float:
        trial.suggest_float("lr_g", 1e-5, 1e-3, log=True)
        if trial.number == 3:
            raise TrialFailed("classifier loss nan at epoch 2")
        level = 0.2 if trial.number == 2 else 0.8
        with stage_run(experiment="tune", stage="train_opengan", params=settings):  # as a GAN stage does
            for step in range(4):
                report(trial, level + 0.01 * step, step)
        return level + 0.05

    storage = f"journal:{tmp_path / 'study.log'}"
    result = run_worker(objective, settings, gan="opengan", storage=storage, n_trials=5, out_dir=tmp_path)
    study = load(storage, "opengan")
    expected = [TrialState.COMPLETE] * 2 + [TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert [t.state for t in study.trials] == expected
    assert study.trials[2].intermediate_values == {0: 0.2}, "pruned at its first step"
    assert result.counts == {"complete": 3, "pruned": 1, "fail": 1, "running": 0}
    assert result.stopped is None

    _, children = study_runs(study.user_attrs["cxraug.study_uid"])
    assert [c.data.tags["optuna.state"] for c in children] == [
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
        "FAIL",
        "COMPLETE",
    ]
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED", "KILLED", "FAILED", "FINISHED"]
    assert "nan at epoch 2" in children[3].data.tags["optuna.reason"]
    history = mlflow.MlflowClient().get_metric_history(children[0].info.run_id, "intermediate_value")
    assert [(m.step, round(m.value, 2)) for m in history] == [(0, 0.8), (1, 0.81), (2, 0.82), (3, 0.83)]
    assert "value" not in children[2].data.metrics and "value" not in children[3].data.metrics
    client = mlflow.MlflowClient()
    stage_status = [
        [
            r.info.status
            for r in client.search_runs(
                [c.info.experiment_id], f"tags.`mlflow.parentRunId` = '{c.info.run_id}'"
            )
        ]
        for c in children
    ]
    assert stage_status == [["FINISHED"], ["FINISHED"], ["KILLED"], [], ["FINISHED"]], "pruned is not broken"


def test_a_worker_stops_after_too_many_failures_in_a_row(tmp_path, mlflow_store):
    def broken(trial) -> float:
        trial.suggest_float("lr_g", 1e-5, 1e-3, log=True)
        raise RuntimeError("the prepared data moved")

    settings = TuneParams(max_failures_in_a_row=2)
    storage = f"journal:{tmp_path / 'study.log'}"
    result = run_worker(broken, settings, gan="bagan", storage=storage, n_trials=10, out_dir=tmp_path)
    assert len(result.trials) == 2 and result.counts["fail"] == 2
    assert "2 trials failed in a row" in result.stopped and "prepared data moved" in result.stopped
    assert result.best is None and not (tmp_path / "best_bagan.yaml").exists()


# ------------------------------------------------------------------------------------- best, sampler


def test_best_params_are_a_valid_params_overlay_and_a_ready_dvc_command(tmp_path, mlflow_store):
    def objective(trial) -> float:
        lr_g = trial.suggest_float("lr_g", 1e-5, 1e-3, log=True)
        trial.suggest_float("lr_d", 1e-5, 1e-3, log=True)
        trial.suggest_float("lr_ae", 1e-4, 1e-2, log=True)
        trial.suggest_int("n_per_class", 500, 3000, step=500)
        return -abs(np.log10(lr_g) + 4)

    storage = f"journal:{tmp_path / 'study.log'}"
    result = run_worker(
        objective, tune_workers.NO_PRUNING, gan="bagan", storage=storage, n_trials=4, out_dir=tmp_path
    )
    best = yaml.safe_load((tmp_path / "best_bagan.yaml").read_text())
    assert best["best_trial"] == result.best.number and best["value"] == pytest.approx(result.best.value)

    base = load_params(REPO / "params.yaml")
    applied = parse_params(merge(base.model_dump(mode="json"), best["params"]))
    for key in ("lr_g", "lr_d", "lr_ae"):
        assert getattr(applied.train_bagan, key) == result.best.params[key]
    assert applied.synthesize.n_per_class == [result.best.params["n_per_class"]]

    words = shlex.split(best["command"])
    assert words[:3] == ["dvc", "exp", "run"] and words[3::2] == ["-S"] * (len(words[3:]) // 2)
    sets = dict(w.split("=", 1) for w in words[4::2])
    assert float(sets["train_bagan.lr_g"]) == pytest.approx(result.best.params["lr_g"], rel=1e-5)
    assert yaml.safe_load(sets["synthesize.n_per_class"]) == [result.best.params["n_per_class"]]


def test_when_real_images_alone_win_the_file_still_names_the_best_gan_setting_and_says_so(tmp_path):
    storage = f"journal:{tmp_path / 'study.log'}"
    study, _ = open_study(open_storage(storage), "real-wins", TuneParams())
    for n, value in [(0, 0.70), (500, 0.60), (1000, 0.65), (0, 0.68)]:
        study.enqueue_trial({"lr_g": 1e-4, "n_per_class": n})
        trial = study.ask()
        trial.suggest_float("lr_g", 1e-5, 1e-3, log=True)
        trial.suggest_int("n_per_class", 0, 3000, step=500)
        study.tell(trial, value)
    choice = write_best(study, "opengan", tmp_path / "best_opengan.yaml", storage, "run-id")
    written = yaml.safe_load((tmp_path / "best_opengan.yaml").read_text())
    assert choice.with_gan.number == written["best_trial"] == 2
    assert written["real_only"] == {"trial": 0, "value": 0.70}
    assert written["beats_real_only"] is False and "no GAN setting beat" in written["note"]
    assert "synthesize.n_per_class=" in written["command"]


def test_a_best_trial_without_synthetic_images_has_no_command():
    overlay = best_overlay("opengan", {"lr_g": 1e-4, "lr_d": 2e-4, "n_per_class": 0})
    assert overlay == {"train_opengan": {"lr_g": 1e-4, "lr_d": 2e-4}}
    assert dvc_command(overlay) is None


def test_the_sampler_replays_a_study_from_its_seed():
    def draws(seed: int) -> list[dict]:
        study = optuna.create_study(direction="maximize", sampler=make_sampler(TuneParams(seed=seed)))
        study.optimize(
            lambda t: -abs(np.log10(t.suggest_float("lr_g", 1e-5, 1e-3, log=True)) + 4), n_trials=8
        )
        return [t.params for t in study.trials]

    assert draws(3) == draws(3)
    assert draws(3) != draws(4)


# -------------------------------------------------------------------------------- storages and config


def test_storage_urls_and_their_mistakes(tmp_path):
    from optuna.storages import JournalStorage, RDBStorage

    assert isinstance(open_storage(f"journal:{tmp_path / 'a' / 'study'}"), JournalStorage)
    assert isinstance(open_storage(str(tmp_path / "study.log")), JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path / 'deep' / 'optuna.db'}"), RDBStorage)
    with pytest.raises(CxraugError, match="RDB URL .* or a journal file"):
        open_storage("optuna.db")
    url = f"postgresql://me:secret@127.0.0.1:{postgres.free_port()}/optuna"
    assert "secret" not in storage_label(url) and "***" in storage_label(url)
    with pytest.raises(CxraugError) as err:
        open_storage(url)
    assert (
        "cannot open it" in str(err.value) and "secret" not in str(err.value) and "\n" not in str(err.value)
    )


@pytest.mark.parametrize(
    ("tune", "hint"),
    [
        ({"search": {"lr_g": {"low": 1e-3, "high": 1e-4}}}, "tune.search.lr_g: low must be < high"),
        (
            {"search": {"lr_d": {"low": 0, "high": 1e-4}}},
            "tune.search.lr_d.low: Input should be greater than 0",
        ),
        ({"search": {"n_per_class": {"low": 0, "high": 1000, "step": 300}}}, "multiple of step"),
        ({"overrides": {"train_bagan": {"epochz": 3}}}, "tune.overrides: train_bagan.epochz: unknown key"),
        (
            {"overrides": {"classify": {"epochs": 0}}},
            "classify.epochs: Input should be greater than or equal to 1",
        ),
        ({"overrides": {"prepare": {"seed": 1}}}, "prepare: not a section trials use"),
    ],
)
def test_search_space_and_overrides_are_validated_in_one_line(tune, hint):
    with pytest.raises(CxraugError) as err:
        parse_params({"tune": tune})
    assert hint in str(err.value) and "\n" not in str(err.value)


def test_trials_train_with_the_overrides_on_top_of_params():
    from cxraug.core.config import trial_params

    params = parse_params(
        {
            "train_bagan": {"epochs": 100, "g_base": 16},
            "synthesize": {"filter": {"threshold": 0.5, "max_tries_factor": 5}},
            "tune": {
                "overrides": {"train_bagan": {"epochs": 3}, "synthesize": {"filter": {"threshold": 0.1}}}
            },
        }
    )
    trial = trial_params(params)
    assert (trial.train_bagan.epochs, trial.train_bagan.g_base) == (3, 16)
    assert (trial.synthesize.filter.threshold, trial.synthesize.filter.max_tries_factor) == (0.1, 5)
    assert params.train_bagan.epochs == 100, "the pipeline's own settings are untouched"


def test_repository_params_declare_the_tune_section():
    params = load_params(REPO / "params.yaml")
    assert params.tune.search.n_per_class.low == 0
    assert "classify" in params.tune.overrides


# ------------------------------------------------------------------------------------- stage nesting


def test_a_stage_run_nests_under_an_open_run_and_is_top_level_otherwise(mlflow_store):
    from cxraug.core.tracking import stage_run

    with stage_run(experiment="nesting-a", stage="alone", params=TuneParams()) as alone:
        pass
    mlflow.set_experiment("nesting-b")
    with (
        mlflow.start_run() as outer,
        stage_run(experiment="nesting-a", stage="inner", params=TuneParams()) as inner,
    ):
        assert mlflow.active_run().info.run_id == inner
    client = mlflow.MlflowClient()
    assert "mlflow.parentRunId" not in client.get_run(alone).data.tags
    nested = client.get_run(inner)
    assert nested.data.tags["mlflow.parentRunId"] == outer.info.run_id
    assert nested.info.experiment_id == outer.info.experiment_id, "a nested stage run stays beside its parent"


# ---------------------------------------------------------------------------------- the real objective

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
        "device": "cpu",
        "precision": "fp32",
    },
    "train_embedder": {
        "d_base": 8,
        "embed_dim": 16,
        "batch_size": 32,
        "epochs": 1,
        "steps_per_epoch": 4,
        "device": "cpu",
        "precision": "fp32",
    },
    "train_opengan": {
        "g_base": 8,
        "d_base": 8,
        "latent_dim": 12,
        "batch_size": 32,
        "epochs": 2,
        "steps_per_epoch": 4,
        "grid_per_class": 2,
        "device": "cpu",
        "precision": "fp32",
    },
    "synthesize": TINY_SYNTHESIZE,
    "classify": TINY_CLASSIFY,
    "tune": {
        "probe_per_class": 16,
        "pruner": {"enabled": False},
        "search": {"n_per_class": {"low": 0, "high": 100, "step": 50}},
        # patience 3: every trial runs its 3 epochs, so the reported steps do not hang on a val AUC tie
        "overrides": {"classify": {"epochs": 3, "patience": 3}},
    },
}


@pytest.fixture(scope="module")
def prepared_without_test(demo_raw, tmp_path_factory, tracking_uri) -> Path:
    """Prepared tiny splits whose test.npz is a booby trap: reading it fails loudly."""
    from cxraug.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(PrepareParams(image_size=32), demo_raw, out, out / "prepare.json")
    (out / "test.npz").write_bytes(b"a trial must never read the test split")
    return out


@pytest.fixture
def npz_reads(monkeypatch) -> list[str]:
    """Every file np.load opens during the test."""
    seen: list[str] = []
    original = np.load

    def spy(file, *args, **kwargs):
        seen.append(Path(getattr(file, "name", file)).name)
        return original(file, *args, **kwargs)

    monkeypatch.setattr(np, "load", spy)
    return seen


def _enqueued_study(tmp_path: Path, name: str, choices: list[dict]) -> str:
    """A study whose next trials take these params (the sampler is bypassed): deterministic real trials."""
    storage = f"journal:{tmp_path / 'study.log'}"
    study, _ = open_study(open_storage(storage), name, TuneParams())
    for params in choices:
        study.enqueue_trial(params)
    return storage


def _run_real(gan, prepared, tmp_path, storage, name, n_trials):
    from cxraug.tune.worker import tune

    return tune(
        gan,
        Params.model_validate(TINY),
        prepared,
        storage=storage,
        study_name=name,
        n_trials=n_trials,
        out_dir=tmp_path / "tuning",
    )


def test_a_bagan_trial_trains_the_gan_adds_its_images_and_scores_val_never_test(
    prepared_without_test, tmp_path, mlflow_store, npz_reads
):
    from cxraug.data.datasets import load_split

    chosen = [
        {"lr_g": 2e-4, "lr_d": 5e-4, "lr_ae": 1e-3, "n_per_class": 100},
        {"lr_g": 2e-4, "lr_d": 5e-4, "lr_ae": 1e-3, "n_per_class": 0},
    ]
    storage = _enqueued_study(tmp_path, "real-bagan", chosen)
    result = _run_real("bagan", prepared_without_test, tmp_path, storage, "real-bagan", 2)
    assert "test.npz" not in npz_reads and "train.npz" in npz_reads and "val.npz" in npz_reads
    study = load(storage, "real-bagan")
    with_gan, real_only = study.trials
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert 0 < with_gan.value < 1 and 0 < real_only.value < 1
    n_train = len(load_split(prepared_without_test, "train"))
    assert with_gan.user_attrs["train_images"] == n_train + 5 * 100
    assert real_only.user_attrs["train_images"] == n_train
    # steps 1-2: the probe after each GAN epoch; 3-5: the classifier's epochs (both trials alike)
    assert sorted(with_gan.intermediate_values) == [1, 2, 3, 4, 5]
    assert sorted(real_only.intermediate_values) == [3, 4, 5]
    assert all(0 < v < 1 for v in with_gan.intermediate_values.values())

    parents, children = study_runs(study.user_attrs["cxraug.study_uid"])
    client = mlflow.MlflowClient()
    stage_runs = client.search_runs(
        [parents[0].info.experiment_id], f"tags.`mlflow.parentRunId` = '{children[0].info.run_id}'"
    )
    assert [r.data.tags["dvc.stage"] for r in stage_runs] == ["train_bagan"]
    assert stage_runs[0].data.params["lr_g"] == "0.0002"
    artifacts = [a.path for a in client.list_artifacts(children[0].info.run_id)]
    assert "synthetic_by_class.png" in artifacts
    assert not client.search_runs(
        [parents[0].info.experiment_id], f"tags.`mlflow.parentRunId` = '{children[1].info.run_id}'"
    ), "n_per_class = 0 trains no GAN"
    assert result.best is not None and (tmp_path / "tuning" / "best_bagan.yaml").is_file()


@pytest.mark.slow  # the BAGAN test above is the fast suite's one real-objective test
def test_an_opengan_study_trains_the_embedder_once_and_reuses_it(
    prepared_without_test, tmp_path, mlflow_store, npz_reads
):
    chosen = [
        {"lr_g": 2e-4, "lr_d": 2e-4, "n_per_class": 100},
        {"lr_g": 1e-3, "lr_d": 1e-4, "n_per_class": 50},
    ]
    storage = _enqueued_study(tmp_path, "real-opengan", chosen)
    _run_real("opengan", prepared_without_test, tmp_path, storage, "real-opengan", 2)
    cache = sorted(p.name for p in (tmp_path / "tuning" / "cache").glob("embedder-*.pt"))
    assert len(cache) == 1
    study = load(storage, "real-opengan")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert sorted(study.trials[0].intermediate_values) == [1, 2, 3, 4, 5]
    parents, children = study_runs(study.user_attrs["cxraug.study_uid"])
    client = mlflow.MlflowClient()
    under_study = client.search_runs(
        [parents[0].info.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    assert sorted(r.data.tags.get("dvc.stage", "trial") for r in under_study) == [
        "train_embedder",
        "trial",
        "trial",
    ]
    assert "test.npz" not in npz_reads

    # a second worker (or a resumed study) reuses the cached embedder: no second train_embedder run
    storage_again = _enqueued_study(tmp_path / "again", "real-opengan-2", [chosen[0] | {"n_per_class": 0}])
    result = _run_real("opengan", prepared_without_test, tmp_path, storage_again, "real-opengan-2", 1)
    parents, _ = study_runs(load(storage_again, "real-opengan-2").user_attrs["cxraug.study_uid"])
    under_study = client.search_runs(
        [parents[0].info.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'"
    )
    assert [r.data.tags["cxraug.role"] for r in under_study] == ["trial"]
    assert result.counts["complete"] == 1


class CopyingProposer:
    """A 'GAN' that returns real training images, scored 1.0: only the near-copy test can reject them."""

    def __init__(self, train) -> None:
        self.train, self.classes = train, tuple(train.classes)

    def propose(self, class_index: int, n: int, generator: torch.Generator):
        pool = self.train.images[self.train.labels == class_index]
        chosen = torch.randint(0, len(pool), (n,), generator=generator)
        return pool[chosen], torch.ones(n)


@pytest.mark.parametrize("drop_near_copies", [False, True])
def test_trials_filter_synthetic_images_like_the_pipeline_near_copies_included(
    prepared_without_test, tmp_path, drop_near_copies
):
    from cxraug.core.config import trial_params
    from cxraug.tune.objective import GanObjective

    raw = merge(TINY, {"synthesize": {"filter": {"drop_near_copies": drop_near_copies}}})
    params = trial_params(Params.model_validate(raw))
    with GanObjective("bagan", params, prepared_without_test, tmp_path) as objective:
        proposer = CopyingProposer(objective.train)
        if drop_near_copies:
            with pytest.raises(optuna.TrialPruned, match="too few candidates"):
                objective._synthesize(proposer, 4)
        else:
            images, labels = objective._synthesize(proposer, 4)
            assert labels.bincount().tolist() == [4] * len(proposer.classes)


def test_diverged_weights_fail_the_trial_with_a_clear_reason():
    from cxraug.tune.objective import check_finite

    net = torch.nn.Linear(2, 2)
    check_finite({"generator": net}, "GAN epoch 1")
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    with pytest.raises(TrialFailed, match="non-finite weights in the generator after GAN epoch 3"):
        check_finite({"generator": net}, "GAN epoch 3")


def test_cli_explains_tune_and_rejects_an_unknown_gan_in_one_line(tmp_path):
    from tests.helpers import project_env

    help_text = subprocess.run(
        ["cxraug", "tune", "--help"], capture_output=True, text=True, env=project_env()
    ).stdout
    for word in ("--n-trials", "--storage", "--study-name", "journal", "never test"):
        assert word in help_text
    (tmp_path / "params.yaml").write_text("prepare: {}\n")
    bad = subprocess.run(
        ["cxraug", "tune", "--gan", "stylegan", "--n-trials", "1", "--prepared", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=project_env(),
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "unknown GAN 'stylegan'" in bad.stderr


def test_the_study_names_its_objective_for_the_dashboard(tmp_path):
    from cxraug.tune.study import OBJECTIVE_NAME

    study, _ = open_study(open_storage(f"journal:{tmp_path / 'study.log'}"), "named", TuneParams())
    assert study.metric_names == [OBJECTIVE_NAME] == ["val macro AUC"]
