"""Worker processes for tests/tune/test_tune.py (module-level, so `multiprocessing` can spawn them).

They run the real `run_worker` (study, sampler, pruner, MLflow) with trivial objectives: the trials are
fast, so what is tested is the sharing of one study, not training."""

from __future__ import annotations

import math
import os
import signal
import time
from pathlib import Path

from cxraug.core.config import TuneParams, TunePrunerParams
from cxraug.tune.worker import report, run_worker

NO_PRUNING = TuneParams(pruner=TunePrunerParams(enabled=False))


def quick_objective(record: Path | None = None, sleep: float = 0.05):
    def objective(trial) -> float:
        lr_g = trial.suggest_float("lr_g", 1e-5, 1e-3, log=True)
        n = trial.suggest_int("n_per_class", 0, 3000, step=500)
        if record is not None:
            with open(record, "a") as f:
                f.write(f"{trial.number}\n")
        time.sleep(sleep)  # long enough for the two workers' trials to interleave
        report(trial, 0.5, 0)
        return 1.0 - abs(math.log10(lr_g) + 4) / 10 - n / 1e5

    return objective


def trivial_worker(storage: str, study: str, n_trials: int, tracking_uri: str, out: str, record: str) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    objective = quick_objective(Path(record))
    run_worker(
        objective,
        NO_PRUNING,
        gan="bagan",
        storage=storage,
        study_name=study,
        n_trials=n_trials,
        out_dir=Path(out),
    )


def sleepy_worker(storage: str, study: str, tracking_uri: str, out: str, started: str) -> None:
    """Trial 0 completes; trial 1 announces itself and sleeps until the test interrupts the process."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    # Ctrl-C at a terminal: a suite started in the background (`cmd &`, as CI may) ignores SIGINT, and
    # a spawned child inherits that, so restore Python's KeyboardInterrupt handler
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def objective(trial) -> float:
        trial.suggest_float("lr_g", 1e-5, 1e-3, log=True)
        if trial.number == 1:
            Path(started).touch()
            time.sleep(300)
        return 0.6

    run_worker(
        objective, NO_PRUNING, gan="bagan", storage=storage, study_name=study, n_trials=5, out_dir=Path(out)
    )
