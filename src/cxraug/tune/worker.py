"""`cxraug tune`: an Optuna study over a GAN's learning rates and the number of synthetic images per class,
scored by the validation macro AUC of a short classifier run (tune/objective.py), tracked in MLflow
(tune/tracking.py), in a storage several workers share (tune/study.py). Outside `dvc repro`: the study's
best settings come back into the pipeline through `dvc exp run -S ...`.

A worker: opens (or joins) the study, holds the study's MLflow run open, runs `n_trials` trials, then
writes the best trial so far to <out>/best_<gan>.yaml with the `dvc exp run` command that applies it.
- A trial that raises (diverged weights, NaN loss, any error) is recorded FAIL and the study goes on; after
  `tune.max_failures_in_a_row` consecutive failures the worker stops (a systematic error, not bad luck).
- Ctrl-C or SIGTERM: the running trial is recorded FAIL (its MLflow run KILLED), the best file is still
  written, and the same command later continues the study (trial numbers go on). A worker killed outright
  (SIGKILL, power loss) leaves its trial RUNNING: RDB storages mark it FAIL by heartbeat
  (tune_study.GRACE_PERIOD_S) when any worker next starts a trial; a journal file keeps it RUNNING, which
  only the history shows (samplers ignore it).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from cxraug.core.config import Params, TuneParams, trial_params
from cxraug.core.runtime import atomic_write_text
from cxraug.gans import registry
from cxraug.tune.objective import GanObjective
from cxraug.tune.study import DEFAULT_STORAGE, open_storage, open_study, storage_label
from cxraug.tune.tracking import (  # noqa: F401  (report, TrialFailed: what objectives use)
    TrialFailed,
    find_or_create_study_run,
    report,
    study_run,
    summarize_study,
    tracked,
)

__all__ = ["DEFAULT_STORAGE", "TrialFailed", "report", "run_worker", "tune"]

log = logging.getLogger(__name__)
Objective = Callable[[optuna.Trial], float]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass
class WorkerResult:
    study_name: str
    storage: str  # password hidden
    trials: list[FrozenTrial]  # the trials this worker ran, in order
    seconds: float
    study_counts: dict[str, int]  # every trial of the study (all workers), by state
    best: FrozenTrial | None  # the study's best complete trial (real-only trials included)
    choice: BestChoice | None  # what best_<gan>.yaml recommends
    parent_run_id: str
    stopped: str | None = None  # why this worker stopped early, if it did
    counts: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.counts = _count(self.trials)

    @property
    def seconds_per_trial(self) -> float | None:
        return self.seconds / len(self.trials) if self.trials else None


def _count(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    counts = {s.name.lower(): 0 for s in (*FINISHED, TrialState.RUNNING)}
    for t in trials:
        if t.state.name.lower() in counts:
            counts[t.state.name.lower()] += 1
    return counts


class _Bookkeeper:
    """Study callback: the trials this worker finished, and a stop after too many failures in a row."""

    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures
        self.trials: list[FrozenTrial] = []
        self.failures_in_a_row = 0
        self.stopped: str | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.trials.append(trial)
        self.failures_in_a_row = self.failures_in_a_row + 1 if trial.state == TrialState.FAIL else 0
        if self.failures_in_a_row >= self.max_failures:
            reason = trial.user_attrs.get("reason", "see the log")
            self.stopped = f"{self.failures_in_a_row} trials failed in a row (last: {reason})"
            study.stop()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """`kill PID` stops a worker like Ctrl-C does: the running trial is recorded, not left RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_worker(
    objective: Objective,
    settings: TuneParams,
    *,
    gan: str,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    n_trials: int = 10,
    timeout: float | None = None,
    max_trials: int | None = None,
    out_dir: Path = Path("tuning"),
    inputs: Sequence[Path] = (),
    setup: Callable[[], None] | None = None,
) -> WorkerResult:
    """One worker of the study: `n_trials` trials (fewer if `timeout` seconds pass, or the study reaches
    `max_trials` complete + pruned trials counting every worker's). `objective(trial) -> value` is any
    callable; it reports intermediate values through `report`."""
    name = study_name or gan
    label = storage_label(storage)
    study, uid = open_study(open_storage(storage), name, settings)
    parent = find_or_create_study_run(name, uid, gan, label, settings, inputs)
    keeper = _Bookkeeper(settings.max_failures_in_a_row)
    callbacks: list = [keeper]
    if max_trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(max_trials, states=FINISHED[:2]))
    started = time.perf_counter()
    choice = None
    try:
        with _sigterm_as_interrupt(), study_run(parent):
            if setup is not None:
                setup()
            done = len(study.get_trials(deepcopy=False, states=FINISHED[:2]))
            if max_trials is None or done < max_trials:
                study.optimize(
                    tracked(objective, uid),
                    n_trials=n_trials,
                    timeout=timeout,
                    catch=(Exception,),
                    callbacks=callbacks,
                )
    except KeyboardInterrupt:
        log.warning("interrupted: the running trial is recorded as failed; rerun to continue the study")
        raise
    finally:
        choice = write_best(study, gan, Path(out_dir) / f"best_{gan}.yaml", label, parent)
        summarize_study(parent, study, choice.path if choice else None)
    trials = study.get_trials(deepcopy=False)
    return WorkerResult(
        study_name=name,
        storage=label,
        trials=keeper.trials,
        seconds=time.perf_counter() - started,
        study_counts=_count(trials),
        best=_best(study),
        choice=choice,
        parent_run_id=parent,
        stopped=keeper.stopped,
    )


def _best(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


# -------------------------------------------------------------------------------------------- results


def best_overlay(gan: str, chosen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The best trial's choices as params.yaml keys: the GAN's learning rates and the images per class."""
    overlay: dict[str, dict[str, Any]] = {
        f"train_{gan}": {k: float(v) for k, v in chosen.items() if k.startswith("lr_")}
    }
    if chosen.get("n_per_class"):
        overlay["synthesize"] = {"n_per_class": [int(chosen["n_per_class"])]}
    return overlay


def dvc_command(overlay: dict[str, dict[str, Any]]) -> str | None:
    """`dvc exp run -S key=value ...` applying the overlay; None when the best trial used no synthetic
    images (then no GAN setting beat the real-only classifier, and there is nothing to apply)."""
    if "synthesize" not in overlay:
        return None
    sets = []
    for section, keys in overlay.items():
        for key, value in keys.items():
            text = (
                f"{value:.6g}" if isinstance(value, float) else yaml.safe_dump(value, default_flow_style=True)
            )
            sets += ["-S", shlex.quote(f"{section}.{key}={text.strip()}")]
    return " ".join(["dvc", "exp", "run", *sets])


@dataclass
class BestChoice:
    """What the study recommends: the best complete trial that added synthetic images (the GAN setting to
    apply), and the best real-only trial (n_per_class = 0), the reference it has to beat."""

    path: Path
    with_gan: FrozenTrial | None
    real_only: FrozenTrial | None
    command: str | None

    @property
    def beats_real_only(self) -> bool | None:
        if self.with_gan is None or self.real_only is None:
            return None
        return self.with_gan.value > self.real_only.value


def _best_complete(study: optuna.Study, uses_gan: bool) -> FrozenTrial | None:
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if (t.params.get("n_per_class", 0) > 0) == uses_gan
    ]
    return max(trials, key=lambda t: (t.value, -t.number), default=None)


def write_best(
    study: optuna.Study, gan: str, path: Path, storage: str, parent_run_id: str
) -> BestChoice | None:
    """<out>/best_<gan>.yaml (atomic), for the whole study: `params` and `command` are those of the best
    complete trial that added synthetic images (a GAN setting is what the pipeline can apply), beside the
    best real-only trial's value, the reference; nothing before the first complete trial."""
    with_gan, real_only = _best_complete(study, uses_gan=True), _best_complete(study, uses_gan=False)
    if with_gan is None and real_only is None:
        return None
    choice = BestChoice(path, with_gan, real_only, None)
    document: dict[str, Any] = {"study": study.study_name, "storage": storage, "gan": gan}
    if with_gan is not None:
        overlay = best_overlay(gan, with_gan.params)
        choice.command = dvc_command(overlay)
        document |= {
            "best_trial": with_gan.number,
            "value": float(with_gan.value),
            "params": overlay,
            "command": choice.command,
            "mlflow_run_id": with_gan.user_attrs.get("mlflow_run_id"),
        }
    else:
        document |= {"best_trial": None, "value": None, "params": None, "command": None}
    document |= {
        "metric": "best val macro AUC of the short classifier run (tune.overrides.classify)",
        "real_only": None
        if real_only is None
        else {"trial": real_only.number, "value": float(real_only.value)},
        "beats_real_only": choice.beats_real_only,
        "trials": _count(study.get_trials(deepcopy=False)),
        "mlflow_study_run_id": parent_run_id,
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if choice.beats_real_only is False:
        document["note"] = (
            "no GAN setting beat the real-only classifier on the short schedule: applying `command` is "
            "not expected to help (the full pipeline's test AUC is the judge)"
        )
    elif with_gan is None:
        document["note"] = "no complete trial added synthetic images yet: nothing to apply"
    header = (
        f"# Best GAN trial of Optuna study '{study.study_name}' ({storage}), written by `cxraug tune`.\n"
        "# `params` are params.yaml keys; `command` applies them to the pipeline as a DVC experiment.\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(document, sort_keys=False))
    return choice


# ------------------------------------------------------------------------------------------- the verb


def tune(
    gan: str,
    params: Params,
    prepared: Path,
    *,
    storage: str = DEFAULT_STORAGE,
    study_name: str | None = None,
    n_trials: int = 10,
    timeout: float | None = None,
    max_trials: int | None = None,
    out_dir: Path = Path("tuning"),
) -> WorkerResult:
    """`cxraug tune`: one worker of a study over `gan`, with the real objective."""

    registry.get(gan)  # an unknown generator is a one-line error before anything starts
    with GanObjective(gan, trial_params(params), prepared, out_dir) as objective:
        return run_worker(
            objective,
            params.tune,
            gan=gan,
            storage=storage,
            study_name=study_name,
            n_trials=n_trials,
            timeout=timeout,
            max_trials=max_trials,
            out_dir=out_dir,
            inputs=objective.inputs,
            setup=objective.setup,
        )
