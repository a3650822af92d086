"""MLflow for `cxraug tune`: one parent run per study, one nested run per trial.

- **Study run** (experiment `tune`, tag `cxraug.role=study`): the search space, pruner and overrides as
  params; tags with the study's name, uid and storage (password hidden), git commit and data md5s; at the end
  of each worker the best value so far, the trial counts, `history.png` and `best_<gan>.yaml`. It is found
  by the study's uid in the current tracking store, or created; workers that start the same moment may
  each create one: each then keeps the earliest (start time, then id) and deletes its own if it lost.
- **Trial run**, nested under it (`mlflow.start_run(nested=True)` while the worker holds the study run
  open): the trial's params, `intermediate_value` per step, `value` when it completes, the tag
  `optuna.state` = COMPLETE | PRUNED | FAIL (+ `optuna.reason`), status FINISHED / KILLED (pruned or
  interrupted) / FAILED. The stage functions a trial calls open their own runs, which nest under the
  trial's (tracking.stage_run).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from pathlib import Path

import optuna
from optuna.trial import TrialState

from cxraug.core import tracking
from cxraug.core.config import TuneParams
from cxraug.core.tracking import sqlite_init_lock

EXPERIMENT = "tune"
UID_TAG = "optuna.study_uid"
STATE_TAG = "optuna.state"
_TRIAL_RUN: ContextVar[str | None] = ContextVar("cxraug_trial_run", default=None)


class TrialFailed(Exception):
    """A trial that cannot give a value (diverged, NaN loss): recorded as FAIL, the study goes on."""


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def _study_runs(experiment_id: str, uid: str) -> list:
    query = f"tags.`{UID_TAG}` = '{uid}' and tags.`cxraug.role` = 'study'"
    return _client().search_runs([experiment_id], query, max_results=100)


def find_or_create_study_run(
    name: str, uid: str, gan: str, storage: str, settings: TuneParams, inputs: Sequence[Path]
) -> str:
    """The id of the study's parent run in the current tracking store."""
    from mlflow.entities import Param

    with sqlite_init_lock(tracking.configure()):  # a fresh local store is created by one worker at a time
        experiment_id = tracking.use_experiment(EXPERIMENT)
    earliest = lambda runs: min(runs, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id  # noqa: E731
    found = _study_runs(experiment_id, uid)
    if found:
        return earliest(found)
    tags = {
        **tracking.run_tags("tune", settings, inputs),
        "cxraug.role": "study",
        UID_TAG: uid,
        "optuna.study_name": name,
        "optuna.storage": storage,
        "gan": gan,
    }
    mine = _client().create_run(experiment_id, tags=tags, run_name=f"study {name}").info.run_id
    params = {"gan": gan, "study_name": name, **tracking._flatten(settings.model_dump(mode="json"))}
    _client().log_batch(mine, params=[Param(k, v) for k, v in params.items()])
    winner = earliest(_study_runs(experiment_id, uid))
    if winner != mine:
        _client().delete_run(mine)
    return winner


@contextlib.contextmanager
def study_run(run_id: str) -> Iterator[None]:
    """Hold the study's run open for this worker: trial runs nest under it. Ctrl-C ends it as KILLED."""
    import mlflow

    with mlflow.start_run(run_id=run_id):
        yield


def trial_run_id() -> str | None:
    """The MLflow run of the trial being evaluated in this worker, if any."""
    return _TRIAL_RUN.get()


def report(trial: optuna.Trial, value: float, step: int) -> None:
    """Give the pruner an intermediate value (also logged to the trial's run); raise TrialPruned when the
    pruner says the trial is worse than the median of earlier trials at this step."""
    if not math.isfinite(value):
        raise TrialFailed(f"intermediate value {value} at step {step}")
    trial.report(value, step)
    run_id = _TRIAL_RUN.get()
    if run_id is not None:  # explicit id: a stage's own run may be the active one when this is called
        _client().log_metric(run_id, "intermediate_value", value, step=step)
    if trial.should_prune():
        raise optuna.TrialPruned(
            f"step {step}: intermediate value {value:.4f} below the median of earlier trials"
        )


def log_trial_params(trial: optuna.Trial) -> None:
    """The params suggested so far, in the trial's run (visible while it trains)."""
    from mlflow.entities import Param

    run_id = _TRIAL_RUN.get()
    if run_id is not None and trial.params:
        _client().log_batch(run_id, params=[Param(k, str(v)) for k, v in trial.params.items()])


def tracked(objective: Callable[[optuna.Trial], float], uid: str) -> Callable[[optuna.Trial], float]:
    """The objective inside a nested MLflow run that records the trial's params, values and state."""

    def run_trial(trial: optuna.Trial) -> float:
        import mlflow
        from mlflow.entities import Param, RunTag

        tags = {"cxraug.role": "trial", UID_TAG: uid, "optuna.trial_number": str(trial.number)}
        run_id = mlflow.start_run(nested=True, run_name=f"trial {trial.number}", tags=tags).info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        token = _TRIAL_RUN.set(run_id)
        state, status, reason = TrialState.FAIL, "FAILED", None
        try:
            value = float(objective(trial))
            if not math.isfinite(value):
                raise TrialFailed(f"the objective returned {value}")
            mlflow.log_metric("value", value)
            state, status = TrialState.COMPLETE, "FINISHED"
            return value
        except optuna.TrialPruned as e:
            state, status, reason = TrialState.PRUNED, "KILLED", str(e) or "pruned"
            raise
        except KeyboardInterrupt:
            status, reason = "KILLED", "interrupted (Ctrl-C or SIGTERM)"
            raise
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            raise
        finally:
            _TRIAL_RUN.reset(token)
            while (active := mlflow.active_run()) is not None and active.info.run_id != run_id:
                mlflow.end_run("KILLED")  # a stage's run left open by an exception
            run_tags = [RunTag(STATE_TAG, state.name)]
            if reason:
                run_tags.append(RunTag("optuna.reason", reason[:5000]))
                trial.set_user_attr("reason", reason[:1000])
            params = [Param(k, str(v)) for k, v in trial.params.items()]
            _client().log_batch(run_id, params=params, tags=run_tags)
            if status == "KILLED":
                _stopped_stage_runs_killed(run_id)
            mlflow.end_run(status)

    return run_trial


def _stopped_stage_runs_killed(trial_run: str) -> None:
    """A stage stopped by the pruner or Ctrl-C ended its own run FAILED on the way out (mlflow.start_run's
    context ends a run FAILED on any exception): it was stopped, not broken."""
    client = _client()
    experiment_id = client.get_run(trial_run).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{trial_run}' and attributes.status = 'FAILED'"
    for run in client.search_runs([experiment_id], query):
        client.set_terminated(run.info.run_id, "KILLED")


def summarize_study(run_id: str, study: optuna.Study, best_file: Path | None) -> None:
    """Best value so far, trial counts, the history figure and the best-params file, in the study run."""
    client = _client()
    counts = {s.name.lower(): 0 for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in study.trials:
        if t.state.name.lower() in counts:
            counts[t.state.name.lower()] += 1
    step = len(study.trials)
    for key, n in counts.items():
        client.log_metric(run_id, f"trials_{key}", n, step=step)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    if complete:
        client.log_metric(run_id, "best_value", study.best_value, step=step)
        client.set_tag(run_id, "best_trial", str(study.best_trial.number))
    client.log_figure(run_id, history_figure(study), "history.png")
    if best_file is not None and best_file.is_file():
        client.log_artifact(run_id, str(best_file))


def history_figure(study: optuna.Study):
    """Left: every trial's value (pruned: its last intermediate value) and the best so far. Right: the
    value against the synthetic images per class, coloured by the generator's learning rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (history, by_n) = plt.subplots(1, 2, figsize=(11, 4.2))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED and t.intermediate_values]
    history.scatter([t.number for t in complete], [t.value for t in complete], label="complete", zorder=3)
    last = [t.intermediate_values[max(t.intermediate_values)] for t in pruned]
    history.scatter([t.number for t in pruned], last, marker="x", color="grey", label="pruned (last step)")
    best, line = -math.inf, []
    for t in complete:
        best = max(best, t.value)
        line.append((t.number, best))
    if line:
        history.step(*zip(*line, strict=True), where="post", color="C3", label="best so far")
    history.set(xlabel="trial", ylabel="val macro AUC", title=f"study {study.study_name}")
    history.xaxis.set_major_locator(MaxNLocator(integer=True))
    history.legend(fontsize=8)
    with_n = [t for t in complete if "n_per_class" in t.params]
    if with_n:
        points = by_n.scatter(
            [t.params["n_per_class"] for t in with_n],
            [t.value for t in with_n],
            c=[math.log10(t.params.get("lr_g", 1.0)) for t in with_n],
            cmap="viridis",
        )
        fig.colorbar(points, ax=by_n, label="log10 lr_g")
    by_n.set(xlabel="synthetic images per class", ylabel="val macro AUC", title="complete trials")
    fig.tight_layout()
    plt.close(fig)
    return fig
