"""core/races.py: MLflow writes that lose a create race to another process are run again; nothing else is.
(The real race, two stages on one `mlflow server` + PostgreSQL, is tests/test_several_machines.py.)"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_ALREADY_EXISTS

from cxraug.core import lineage
from cxraug.core.races import lost_a_race, retry_lost_races

# what `mlflow server` on PostgreSQL answered when two train_bagan processes logged train.npz at once
SERVER_LOST = RestException(
    {
        "error_code": "BAD_REQUEST",
        "message": "(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint "
        '"dataset_pk"',
    }
)


def test_only_errors_that_say_another_writer_created_the_row_count_as_a_lost_race():
    assert lost_a_race(SERVER_LOST)
    assert lost_a_race(MlflowException("Experiment 'x' already exists.", error_code=RESOURCE_ALREADY_EXISTS))
    assert lost_a_race(MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.name"))
    assert not lost_a_race(MlflowException("Invalid value for metric", error_code=INVALID_PARAMETER_VALUE))
    assert not lost_a_race(ConnectionError("Connection refused"))


def test_a_lost_race_is_retried_until_it_succeeds_and_other_errors_are_raised_at_once():
    calls = []

    def flaky(x, *, y):
        calls.append((x, y))
        if len(calls) < 3:
            raise SERVER_LOST
        return x + y

    assert retry_lost_races(flaky, 1, y=2, wait_s=0) == 3 and len(calls) == 3

    def broken():
        calls.append("broken")
        raise MlflowException("bad", error_code=INVALID_PARAMETER_VALUE)

    calls.clear()
    with pytest.raises(MlflowException, match="bad"):
        retry_lost_races(broken, wait_s=0)
    assert calls == ["broken"], "not a race: no retry"

    def always_lost():
        calls.append("lost")
        raise SERVER_LOST

    calls.clear()
    with pytest.raises(RestException):
        retry_lost_races(always_lost, attempts=3, wait_s=0)
    assert calls == ["lost"] * 3


def test_a_data_set_another_stage_logged_first_is_linked_not_lost(tracking_uri, tmp_path, monkeypatch):
    """The other process wins: it logs the same set (same experiment, name, digest) to its own run just
    before us, and our insert fails as the server's did. Retried, our run still gets its input."""
    split = tmp_path / "train.npz"
    np.savez(split, images=np.zeros((2, 4, 4), np.uint8), labels=np.zeros(2, np.int64))
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(f"race-{tmp_path.name}").experiment_id
    client = mlflow.MlflowClient()
    other = client.create_run(experiment_id).info.run_id
    real_log_input, attempts = mlflow.log_input, []

    def lose_the_first_time(dataset, **kwargs):
        attempts.append(dataset.name)
        if len(attempts) == 1:
            with mlflow.start_run(run_id=other, nested=True):
                real_log_input(dataset, **kwargs)
            raise SERVER_LOST
        return real_log_input(dataset, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", lose_the_first_time)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        lineage.log_datasets({"train": split})
    assert attempts == ["train", "train"]
    for run_id in (other, run.info.run_id):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [i.dataset.name for i in inputs] == ["train"], run_id
        assert inputs[0].dataset.digest == lineage.dvc_hash(split)
    assert json.loads(inputs[0].dataset.source)["uri"].endswith("train.npz")


def test_two_stages_creating_one_experiment_at_once_both_use_it(tracking_uri, tmp_path, monkeypatch):
    """The other process creates the experiment between our lookup and our insert: MLflow's
    set_experiment then fails with RESOURCE_ALREADY_EXISTS (58 of 80 such calls did, 4 threads at once on
    mlflow server + PostgreSQL); use_experiment retries and joins the winner's experiment."""
    from cxraug.core import tracking

    mlflow.set_tracking_uri(tracking_uri)
    name, real_set_experiment, calls = f"created-twice-{tmp_path.name}", mlflow.set_experiment, []

    def lose_the_first_time(experiment_name):
        calls.append(experiment_name)
        if len(calls) == 1:
            mlflow.MlflowClient().create_experiment(experiment_name)  # the winner
            raise MlflowException(f"Experiment '{experiment_name}' already exists.", RESOURCE_ALREADY_EXISTS)
        return real_set_experiment(experiment_name)

    monkeypatch.setattr(mlflow, "set_experiment", lose_the_first_time)
    experiment_id = tracking.use_experiment(name)
    assert calls == [name, name]
    experiment = mlflow.MlflowClient().get_experiment(experiment_id)
    assert (
        experiment.name == name and experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.EXPERIMENT_KIND
    )
    assert len(mlflow.MlflowClient().search_experiments(filter_string=f"name = '{name}'")) == 1
