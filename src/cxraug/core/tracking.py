"""MLflow wiring: one run per stage invocation, tagged so it can be found from dvc.lock and back.

Tags on every run: git commit (and whether the tree was dirty), DVC stage, a hash of the stage's params
section, and `input.<DVC path>.md5` for every input (the hash dvc.lock records: cxraug.core.lineage); the
data sets among the inputs are logged with mlflow.log_input. Experiments are marked as model-training
experiments, so MLflow's UI opens them on their runs (not on its GenAI traces view).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

import cxraug
from cxraug.core import lineage
from cxraug.core.cards import card_grid, to_uint8_grid
from cxraug.core.runtime import file_md5

DEFAULT_TRACKING_URI = "sqlite:///mlruns/mlflow.db"
# The experiment tag MLflow 3 reads for an experiment's kind, set for MLflow versions that honour it.
# MLflow 3.17's UI ignores it and opens experiments on GenAI traces: `make ui` serves the UI through
# cxraug.cli.ui, which makes "Model training" (the runs) a new browser's default view.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


def project_root(cwd: Path | None = None) -> Path | None:
    """The project a DVC experiment runs for when it runs in a copy of it (`dvc exp run --queue`,
    `--temp`: <project>/.dvc/tmp/exps/...), else None: the copy is deleted afterwards, so its runs and
    artifacts belong in the project's store."""
    parts = (cwd or Path.cwd()).resolve().parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return None


def configure() -> str:
    """Point MLflow at $MLFLOW_TRACKING_URI, else the project's sqlite store; return the URI."""
    import mlflow

    root = project_root()
    default = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}" if root else DEFAULT_TRACKING_URI
    uri = os.environ.get("MLFLOW_TRACKING_URI") or default
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


@contextlib.contextmanager
def sqlite_init_lock(url: str):
    """Serialise the first opening of a local sqlite database (Optuna's or MLflow's) across processes:
    two workers creating the same fresh file at once would both try to create its tables."""
    if not url.startswith("sqlite:///"):
        yield
        return
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def params_hash(section: BaseModel) -> str:
    payload = json.dumps(section.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def input_md5s(inputs: Sequence[str | Path]) -> dict[str, str]:
    """md5 of every input file; a directory contributes each file below it."""
    digests: dict[str, str] = {}
    for item in map(Path, inputs):
        files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        for f in files:
            if f.is_file():
                digests[f.as_posix()] = file_md5(f)
    return digests


def run_tags(stage: str, params: BaseModel, inputs: Sequence[str | Path]) -> dict[str, str]:
    return {
        "cxraug.version": cxraug.__version__,
        "dvc.stage": stage,
        "params.hash": params_hash(params),
        "git.commit": _git("rev-parse", "HEAD") or "unknown",
        "git.dirty": str(bool(_git("status", "--porcelain", "--untracked-files=no"))).lower(),
        **lineage.input_tags(inputs),
    }


def use_experiment(name: str, attempts: int = 3) -> str:
    """mlflow.set_experiment marked as a model-training experiment; retried, since two stages run in
    parallel (`dvc queue start -j 2`) may create the same experiment at the same moment. Its id."""
    import mlflow

    root = project_root()
    for attempt in range(1, attempts + 1):
        try:
            if root is not None and mlflow.get_experiment_by_name(name) is None:  # artifacts outlive the copy
                mlflow.create_experiment(name, artifact_location=(root / "mlruns" / name).as_uri())
            experiment = mlflow.set_experiment(name)
            if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
                mlflow.MlflowClient().set_experiment_tag(
                    experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
                )
            return experiment.experiment_id
        except Exception:
            if attempt == attempts:
                raise
            time.sleep(attempt)
    raise AssertionError("unreachable")


def _flatten(data: Mapping, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:500]
    return flat


@contextlib.contextmanager
def stage_run(
    *,
    experiment: str,
    stage: str,
    params: BaseModel,
    inputs: Sequence[str | Path] = (),
    run_name: str | None = None,
    resume_run_id: str | None = None,
    nested: bool = False,
    extra_tags: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """Open (or reopen, when resuming) the MLflow run of one stage invocation; yield its run id.

    Inside an open run (an Optuna trial calling a stage function) the stage's run nests under it, in that
    run's experiment; a stage started on its own (DVC) opens a top-level run in `experiment`."""
    import mlflow

    uri = configure()
    outer = mlflow.active_run()
    if outer is None:
        with sqlite_init_lock(uri):  # parallel stages (dvc queue -j 2): one creates a fresh store's tables
            use_experiment(experiment)
    nested = nested or outer is not None
    experiment_id = outer.info.experiment_id if outer is not None else None
    tags = {**run_tags(stage, params, inputs), **(extra_tags or {})}
    if resume_run_id is not None:
        with mlflow.start_run(run_id=resume_run_id, nested=nested) as run:
            mlflow.set_tags(tags)
            yield run.info.run_id
        return
    with mlflow.start_run(
        run_name=run_name or stage, tags=tags, nested=nested, experiment_id=experiment_id
    ) as run:
        mlflow.log_params(_flatten(params.model_dump(mode="json")))
        lineage.log_datasets(lineage.datasets_of(inputs))
        yield run.info.run_id


class MetricBuffer:
    """Collects per-step metrics and sends them in batches, so logging stays off the training hot path."""

    def __init__(self, flush_every: int = 50) -> None:
        self.flush_every = flush_every
        self._pending: list = []

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if len(self._pending) >= self.flush_every * max(1, len(metrics)):
            self.flush()

    def flush(self) -> None:
        import mlflow

        run = mlflow.active_run()
        while self._pending and run is not None:
            batch, self._pending = self._pending[:1000], self._pending[1000:]
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=batch, synchronous=True)


def labelled_grid(
    rows: Sequence[torch.Tensor | np.ndarray],
    row_labels: Sequence[str],
    title: str,
    column_labels: Sequence[str] | None = None,
    cell: int = 96,
) -> np.ndarray:
    """An RGB uint8 figure of image rows (one row per class, say), each row named on the left, a title
    above: readable at the size MLflow shows an image card, unlike a bare strip of 64-px images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strips = [to_uint8_grid(r, nrow=max(1, len(r)), padding=2) for r in rows]
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 0), (0, width - s.shape[1])), constant_values=255) for s in strips]
    grid = np.concatenate(strips)
    side = max(1, len(rows[0]) if len(rows) else 1)
    scale = cell / (width / side)
    fig_w, fig_h = width * scale / 100 + 1.6, grid.shape[0] * scale / 100 + 0.6
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=100)
    ax.imshow(grid, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    row_h = grid.shape[0] / len(rows)
    ax.set_yticks([row_h * (i + 0.5) for i in range(len(rows))], list(row_labels))
    if column_labels:
        col_w = width / len(column_labels)
        ax.set_xticks([col_w * (i + 0.5) for i in range(len(column_labels))], list(column_labels), fontsize=8)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


def log_labelled_grid(
    rows: Sequence[torch.Tensor | np.ndarray],
    row_labels: Sequence[str],
    title: str,
    key: str,
    step: int | None = None,
    column_labels: Sequence[str] | None = None,
) -> None:
    """`labelled_grid` logged as an image file; with a step, a square `card_grid` on the key's image
    slider instead, drawn to be read at MLflow's card size (the column labels stay in the file)."""
    import mlflow

    if step is None:
        mlflow.log_image(labelled_grid(rows, row_labels, title, column_labels), artifact_file=f"{key}.png")
    else:
        mlflow.log_image(card_grid(rows, row_labels, title), key=key, step=step)


def log_grid(images: torch.Tensor | np.ndarray, key: str, step: int | None = None, nrow: int = 8) -> None:
    """Log an image grid; with a step it joins the run's image slider, so progress is visible per epoch."""
    import mlflow

    grid = to_uint8_grid(images, nrow=nrow)
    if step is None:
        mlflow.log_image(grid, artifact_file=f"{key}.png")
    else:
        mlflow.log_image(grid, key=key, step=step)
