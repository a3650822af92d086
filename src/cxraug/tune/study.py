"""The Optuna side of `cxraug tune`: storages, the seeded sampler, the pruner, opening a shared study.

Storage URLs:
- `sqlite:///PATH`, `postgresql://USER:PASSWORD@HOST:PORT/DB` (needs the `postgres` extra), any other
  SQLAlchemy URL: an RDBStorage with heartbeats, so a trial whose worker died is marked FAIL by the next
  worker to start a trial (after `GRACE_PERIOD_S`);
- `journal:PATH` or a path ending in `.log`: a JournalStorage on that file (JournalFileBackend, append-only
  with a lock file: works on NFS and other shared file systems; Optuna has no heartbeats for it).
"""

from __future__ import annotations

import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from cxraug.core.config import TuneParams
from cxraug.core.errors import CxraugError
from cxraug.core.tracking import sqlite_init_lock

DEFAULT_STORAGE = "sqlite:///mlruns/optuna.db"
HEARTBEAT_INTERVAL_S = 60  # a running trial's worker writes a heartbeat this often (RDB storages)
GRACE_PERIOD_S = 300  # no heartbeat for this long: the trial is stale and marked FAIL
UID_ATTR = "cxraug.study_uid"  # identifies one study for MLflow, across machines and recreations


def is_journal(url: str) -> bool:
    return url.startswith("journal:") or url.endswith(".log")


def storage_label(url: str) -> str:
    """The URL with any password hidden: what is printed, tagged and written to files."""
    if is_journal(url):
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg (3); the `postgres` extra installs psycopg2."""
    import importlib.util

    scheme, _, rest = url.partition("://")
    postgres = scheme in ("postgresql", "postgres")
    if postgres and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return f"postgresql+psycopg2://{rest}"
    return url


def open_storage(url: str) -> BaseStorage:
    """An Optuna storage for an RDB URL or a journal file; a bad URL or an unreachable server is a
    one-line CxraugError."""
    if is_journal(url):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise CxraugError(
            f"--storage {url}: give an RDB URL (sqlite:///path.db, postgresql://user@host/db) or a journal "
            "file (journal:PATH, or a path ending in .log)"
        )
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # several local workers wait for the file lock
    else:
        engine_kwargs["pool_pre_ping"] = True  # a server-side dropped connection is reopened, not an error
    try:
        return _rdb_storage(url, engine_kwargs)
    except ImportError:
        raise CxraugError(
            f"--storage {storage_label(url)}: its database driver is not installed; for PostgreSQL: "
            "pip install -e '.[postgres]' (psycopg2-binary)"
        ) from None
    except Exception as e:  # sqlalchemy's connection / URL errors
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CxraugError(f"--storage {storage_label(url)}: cannot open it ({first_line})") from None


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], attempts: int = 3) -> BaseStorage:
    """RDBStorage with heartbeats. Workers starting together on a fresh database race to create its
    tables: a local sqlite file is locked meanwhile; a server's loser retries and finds them made."""
    for attempt in range(1, attempts + 1):
        try:
            with sqlite_init_lock(url), warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats
                return optuna.storages.RDBStorage(
                    _with_driver(url),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=GRACE_PERIOD_S,
                )
        except ImportError:
            raise
        except Exception:
            if attempt == attempts:
                raise
            time.sleep(attempt)
    raise AssertionError("unreachable")


class PerTrialSeedSampler(BaseSampler):
    """TPE whose random numbers for trial k come from (seed, k): one worker replays a study exactly, and
    workers sharing a study never draw the same "random" start-up trials (as one seed each would)."""

    def __init__(self, seed: int, **tpe: Any) -> None:
        self.seed, self.tpe = seed, tpe
        self._samplers: dict[int, TPESampler] = {}

    def _for(self, trial: FrozenTrial) -> TPESampler:
        if trial.number not in self._samplers:
            seed = int(np.random.SeedSequence([self.seed, trial.number]).generate_state(1)[0])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._samplers[trial.number] = TPESampler(seed=seed, **self.tpe)
        return self._samplers[trial.number]

    def infer_relative_search_space(self, study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]):
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial: FrozenTrial, param_name: str, param_distribution):
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study, trial: FrozenTrial, state: TrialState, values) -> None:
        sampler = self._for(trial)
        del self._samplers[trial.number]
        sampler.after_trial(study, trial, state, values)


def make_sampler(settings: TuneParams) -> BaseSampler:
    # multivariate: lr_g and lr_d act together (their ratio matters), so they are modelled jointly
    return PerTrialSeedSampler(settings.seed, n_startup_trials=settings.n_startup_trials, multivariate=True)


def make_pruner(settings: TuneParams) -> optuna.pruners.BasePruner:
    p = settings.pruner
    if not p.enabled:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps, interval_steps=p.interval_steps
    )


OBJECTIVE_NAME = "val macro AUC"


def open_study(
    storage: BaseStorage, name: str, settings: TuneParams, wait_s: float = 30.0
) -> tuple[optuna.Study, str]:
    """Create the study, or join it when another worker (or an earlier run) created it; return it with
    its uid. Creation is atomic in every storage (the name is unique), so exactly one worker writes the
    uid; the others wait the moment it takes."""
    sampler, pruner = make_sampler(settings), make_pruner(settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(
            storage=storage, study_name=name, direction="maximize", sampler=sampler, pruner=pruner
        )
        study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
        study.set_metric_names([OBJECTIVE_NAME])  # optuna-dashboard's label, not "Objective 0"
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(storage=storage, study_name=name, sampler=sampler, pruner=pruner)
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise CxraugError(
            f"study '{name}' minimises; cxraug tune maximises val AUC: pick another --study-name"
        )
    deadline = time.monotonic() + wait_s
    while UID_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:  # its creator died before writing it: adopt the study
            study.set_user_attr(UID_ATTR, uuid.uuid4().hex)
            break
        time.sleep(0.2)
    return study, study.user_attrs[UID_ATTR]
