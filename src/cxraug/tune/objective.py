"""What `cxraug tune` maximises: one trial = one GAN trained with the trial's learning rates on the short
schedule (`tune.overrides`), n_per_class filtered synthetic images per class drawn from it in memory, and
a short classifier trained on the real training images plus those; the value is that classifier's best
validation macro AUC.

- The training functions are reused as they are (the generator's `train` from gans/registry.py,
  synthesis's filter, `train_classifier`), writing into a temporary directory per trial; their MLflow
  runs nest under the trial's. Every generator is watched through the same hooks (core/stage.py), so no
  generator needs an adapter here.
- An embedder (OpenGAN's) does not depend on the tuned learning rates: it is trained once (per settings
  and data, cached in <work_dir>/cache/) and every trial conditions on that same frozen embedder.
- n_per_class = 0 trains no GAN: the trial is the real-only classifier under the same schedule (its
  learning rates are recorded but unused), the reference every GAN trial must beat.
- Intermediate values for the pruner, by step: GAN epoch e (1..E) -> the probe's val macro AUC (a
  logistic regression on thumbnails of `tune.probe_per_class` unfiltered candidates per class, scored on
  the real val images: does the generator carry its classes' signal?); classifier epoch c -> step E + c,
  its val macro AUC. Each step always holds the same quantity, whatever the trial.
- NEVER the test split: the trial's data directory holds links to train.npz and val.npz only, so no
  stage a trial runs can read test; `__call__` asserts it before every trial.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F

from cxraug.classifier.train import EpochLog, train_classifier
from cxraug.core.config import Params, TuneSearchSpace
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import file_md5, pick_device, slug
from cxraug.core.stage import EpochEnd, Hooks
from cxraug.core.tracking import log_grid, params_hash
from cxraug.data.datasets import Split, load_split
from cxraug.gans import registry
from cxraug.gans.opengan.train_embedder import train_embedder
from cxraug.metrics.auc import per_class_auc
from cxraug.synthesis.draw import near_copy_filter, synthesize
from cxraug.synthesis.filters import filter_rule
from cxraug.tune.tracking import TrialFailed, log_trial_params, report, trial_run_id

log = logging.getLogger(__name__)
SPLITS = ("train", "val")  # the only splits a trial may see


def suggest(trial: optuna.Trial, space: TuneSearchSpace, gan: str) -> dict[str, Any]:
    """The trial's choices: log-uniform learning rates, then the ordinal number of images per class."""
    chosen: dict[str, Any] = {}
    for name in registry.get(gan).searched:
        bounds = getattr(space, name)
        chosen[name] = trial.suggest_float(name, bounds.low, bounds.high, log=True)
    n = space.n_per_class
    chosen["n_per_class"] = trial.suggest_int("n_per_class", n.low, n.high, step=n.step)
    return chosen


def train_val_only(prepared: Path, into: Path) -> Path:
    """A directory holding links to prepared/train.npz and prepared/val.npz and nothing else: whatever a
    trial runs, the test split is not there to be read."""
    into.mkdir(parents=True)
    for name in SPLITS:
        source = (Path(prepared) / f"{name}.npz").resolve()
        if not source.is_file():
            raise CxraugError(
                f"{prepared}/{name}.npz: not found; run `cxraug prepare` first (or pass --prepared)"
            )
        (into / f"{name}.npz").symlink_to(source)
    assert sorted(p.name for p in into.iterdir()) == ["train.npz", "val.npz"]
    return into


def thumbnails(images: torch.Tensor, side: int = 16) -> np.ndarray:
    """uint8 [N, H, W] -> [N, side * side] float features in [-1, 1] (area-averaged)."""
    x = F.adaptive_avg_pool2d(images[:, None].float().div(127.5).sub(1.0), side)
    return x.flatten(1).numpy()


def probe_auc(proposer, val: Split, per_class: int, seed: int) -> float:
    """A cheap classification-accuracy score: logistic regression on thumbnails of `per_class` unfiltered
    candidates of every class, val macro AUC on the real val images. ~0.5: the generator's images carry no
    class signal."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    with torch.inference_mode():
        for c in range(len(proposer.classes)):
            drawn, _ = proposer.propose(c, per_class, generator)
            images.append(drawn.cpu())
            labels += [c] * len(drawn)
    features = thumbnails(torch.cat(images))
    if not np.isfinite(features).all():
        raise TrialFailed("the generator produced non-finite images")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=500))
    probe.fit(features, labels)
    return float(np.nanmean(per_class_auc(probe.predict_proba(thumbnails(val.images)), val.labels.numpy())))


def check_finite(modules: dict[str, torch.nn.Module], when: str) -> None:
    for name, module in modules.items():
        if not all(torch.isfinite(p).all() for p in module.parameters()):
            raise TrialFailed(f"non-finite weights in the {name} after {when} (the learning rates diverged)")


def with_values(section, **values):
    """A params section with some keys replaced, validated again (a frozen model's copy would not be)."""
    return type(section).model_validate({**section.model_dump(), **values})


class GanObjective:
    """The objective of a study over one GAN; `setup()` once per worker, then one call per trial."""

    def __init__(self, gan: str, params: Params, prepared: Path, work_dir: Path) -> None:
        self.generator = registry.get(gan)
        self.gan, self.params, self.work_dir = gan, params, Path(work_dir)
        self._tmp = tempfile.TemporaryDirectory(prefix="cxraug-tune-")
        self.data_dir = train_val_only(Path(prepared), Path(self._tmp.name) / "data")
        self.train, self.val = (load_split(self.data_dir, name) for name in SPLITS)
        if self.val.classes != self.train.classes:
            raise CxraugError(f"{prepared}: train and val list different classes; rerun `cxraug prepare`")
        self.embedder_path: Path | None = None
        self._near_copy_filter = None

    @property
    def inputs(self) -> list[Path]:
        return [self.data_dir / f"{name}.npz" for name in SPLITS]

    @property
    def gan_epochs(self) -> int:
        return getattr(self.params, self.generator.section).epochs

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> GanObjective:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ the trial

    def setup(self) -> None:
        """Once per worker, inside the study's MLflow run: a needed frozen embedder."""
        if self.generator.needs_embedder:
            self.embedder_path = self._embedder()

    def __call__(self, trial: optuna.Trial) -> float:
        assert not any(self.data_dir.glob("test*")), "a trial must never see the test split"
        chosen = suggest(trial, self.params.tune.search, self.gan)
        log_trial_params(trial)
        synthetic = None
        if chosen["n_per_class"] > 0:
            with tempfile.TemporaryDirectory(prefix=f"cxraug-trial{trial.number}-") as tmp:
                proposer = self._train_gan(trial, chosen, Path(tmp))
                synthetic = self._synthesize(proposer, chosen["n_per_class"])
        return self._classify(trial, synthetic)

    def _train_gan(self, trial: optuna.Trial, chosen: dict[str, Any], tmp: Path):
        lrs = {k: chosen[k] for k in self.generator.searched}
        if self.generator.needs_embedder and self.embedder_path is None:
            self.setup()
        params = with_values(getattr(self.params, self.generator.section), **lrs)
        hooks = Hooks(on_epoch=lambda end: self.epoch_done(trial, end))
        model = tmp / "model"
        self.generator.train(
            params, self.data_dir, model, tmp / "metrics.json", tmp / "checkpoints", hooks, self.embedder_path
        )
        synth = self.params.synthesize
        return self.generator.load_proposer(model, pick_device(synth.device), synth.precision)

    def epoch_done(self, trial: optuna.Trial, end: EpochEnd) -> None:
        """Every epoch of every phase: the nets must be finite; after a GAN epoch the probe runs on the
        live generator (the pruner may stop the trial here)."""
        check_finite(dict(end.nets), f"{end.phase} epoch {end.epoch}")
        if end.proposer is not None:
            self.gan_epoch_done(trial, end.epoch, end.proposer)

    def gan_epoch_done(self, trial: optuna.Trial, epoch: int, proposer) -> None:
        """Report the probe of a finished GAN epoch (the pruner may stop the trial here)."""
        per_class = self.params.tune.probe_per_class
        if per_class:
            value = probe_auc(proposer, self.val, per_class, self.params.tune.seed)
            _log_metrics({"probe_val_auc_macro": value}, epoch)
            report(trial, value, epoch)

    def _synthesize(self, proposer, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n images per class through synthesize's own filter, in memory; a GAN that cannot supply them
        within the cap on tries is pruned (no classifier could use it)."""

        s = self.params.synthesize
        rule = filter_rule(s.filter, self.gan)  # synthesize.filter.per_gan: argmax, threshold or none
        with torch.inference_mode():
            draws = synthesize(
                proposer,
                n,
                rule,
                s.filter.max_tries_factor,
                s.batch_size,
                torch.Generator().manual_seed(s.seed),
                near_copy=self._near_copy(),
            )
        _log_metrics({f"acceptance_rate/{slug(d.name)}": d.acceptance_rate for d in draws}, 0)
        short = {d.name: d.accepted for d in draws if d.accepted < n}
        if short:
            raise optuna.TrialPruned(
                f"too few candidates passed the filter ({rule.describe()}) within "
                f"{s.filter.max_tries_factor:g}x tries: {short}, wanted {n} per class"
            )
        shown = min(n, 8)
        if trial_run_id() is not None:
            log_grid(torch.cat([d.images[:shown] for d in draws]), "synthetic_by_class", nrow=shown)
        images = torch.cat([d.images for d in draws])
        labels = torch.cat([torch.full((d.accepted,), d.label, dtype=torch.long) for d in draws])
        return images, labels

    def _near_copy(self):
        """synthesize.filter.drop_near_copies, as the pipeline applies it (built once per worker)."""
        if not self.params.synthesize.filter.drop_near_copies:
            return None
        if self._near_copy_filter is None:
            s = self.params.synthesize
            self._near_copy_filter = near_copy_filter(s, self.data_dir, pick_device(s.device))
        return self._near_copy_filter

    def _classify(self, trial: optuna.Trial, synthetic: tuple[torch.Tensor, torch.Tensor] | None) -> float:

        params = self.params.classify
        images, labels = self.train.images, self.train.labels
        if synthetic is not None:
            images, labels = torch.cat([images, synthetic[0]]), torch.cat([labels, synthetic[1]])

        def on_epoch(entry: EpochLog) -> None:
            if not math.isfinite(entry.train_loss):
                raise TrialFailed(f"classifier loss {entry.train_loss} at epoch {entry.epoch}")
            metrics = {
                "classifier/train_loss": entry.train_loss,
                "classifier/val_auc_macro": entry.val_macro_auc,
            }
            classes = self.train.classes
            metrics.update(
                {f"classifier/val_auc/{slug(c)}": a for c, a in zip(classes, entry.val_auc, strict=True)}
            )
            _log_metrics(metrics, entry.epoch)
            report(trial, entry.val_macro_auc, self.gan_epochs + entry.epoch)

        trained = train_classifier(images, labels, self.val, params, params.seeds[0], on_epoch=on_epoch)
        trial.set_user_attr("classifier_best_epoch", trained.best_epoch)
        trial.set_user_attr("train_images", len(labels))
        return trained.best_val_macro_auc

    # ---------------------------------------------------------------------------------------- embedder

    def _embedder(self) -> Path:
        """train_embedder once for these settings and data; later workers and resumed studies reuse it."""

        p = self.params.train_embedder
        key = hashlib.sha256(
            (params_hash(p) + "".join(file_md5(f) for f in self.inputs)).encode()
        ).hexdigest()[:16]
        cache = self.work_dir / "cache"
        path = cache / f"embedder-{key}.pt"
        if path.is_file():
            log.info("reusing the embedder %s (same settings and data)", path)
            return path
        log.info("training the embedder once for this study: %s", path)
        train_embedder(p, self.data_dir, path, cache / f"embedder-{key}.json", cache / f"checkpoints-{key}")
        return path


def _log_metrics(metrics: dict[str, float], step: int) -> None:
    run_id = trial_run_id()
    if run_id is None:
        return
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])
