"""`synthesize` stage: draw class-conditional candidates from a trained GAN and keep only those the model
itself accepts as the intended class (BAGAN: its discriminator's K+1 softmax; OpenGAN: realness and the
embedder's nearest class), then write them as PNGs with an index.

Policy, per class:
- the threshold is `filter.threshold`, or 0 (every candidate passes, scores still recorded) for a GAN in
  `filter.unfiltered` (by default OpenGAN, sampled unfiltered as published);
- candidates are drawn in batches of `batch_size` until max(n_per_class) pass the threshold or
  ceil(max_tries_factor x wanted) candidates have been drawn (the last batch is shortened to the cap);
- accepted images keep their draw order, so the first n of a class are what a variant with n synthetic
  images per class trains on (`load_synthetic`), and the n=1000 set is a prefix of the n=3000 set;
- a class that falls short of max(n_per_class) is written anyway and its shortfall recorded; the stage
  fails, after writing and logging (so the score histograms show why), only when some class has fewer
  than min(n_per_class) images, i.e. when not even the smallest variant could be trained;
- each class draws from its own generator, seeded from `seed`: a class's images do not change when
  another class needs more or fewer tries.
- with `filter.drop_near_copies`, a passing candidate whose nearest real training image is closer (pixel
  RMSE) than `filter.copy_threshold` x the median real-to-real nearest-neighbour RMSE is dropped and counted
  (metrics/memorisation.py); off, nothing about the draws changes.

Layout (the contract with `classify`, in synthetic_files.py): <out>/<class_slug>/<00000>.png (8-bit gray)
and <out>/index.csv with columns file (relative to <out>), class, label, score, in acceptance order.
MLflow logging is in synthesize_tracking.py.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch

from cxraug.core.config import SynthesizeParams
from cxraug.core.errors import CxraugError
from cxraug.synthesis.tracking import log_to_mlflow, training_run_id
from cxraug.synthesis.files import (  # noqa: F401  (load_synthetic, read_index: the readers' API)
    load_synthetic,
    read_exemplars,
    read_index,
    write_synthetic,
)
from cxraug.core.runtime import Precision, atomic_write_json, pick_device, pick_precision, progress

# Imported only when used, so each GAN's module (and its dependencies) loads only for its own stage.
PROPOSERS = {
    "bagan": "cxraug.gans.bagan.train:load_proposer",
    "opengan": "cxraug.gans.opengan.proposer:load_proposer",
}
EXEMPLAR_PROPOSER = "cxraug.gans.opengan.proposer:load_exemplar_proposer"
TRAIN_STAGES = {"bagan": "train_bagan", "opengan": "train_opengan"}
KEEP_REJECTED = 32  # rejected candidates kept per class, only to show them beside the accepted ones


@runtime_checkable
class Proposer(Protocol):
    """What a trained GAN offers the synthesis stage."""

    classes: tuple[str, ...]  # class names, index = label

    def propose(
        self, class_index: int, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n fresh candidates of the class: uint8 images [n, H, W] (CPU) and, per image, a score in [0, 1]:
        the model's confidence that the image shows `class_index` (what the filter thresholds)."""
        ...


@dataclass
class ClassDraw:
    """One class's outcome: the accepted images in draw order and every candidate's score."""

    name: str
    label: int
    wanted: int
    images: torch.Tensor  # uint8 [accepted, H, W]
    scores: torch.Tensor  # float32 [accepted]
    candidate_scores: torch.Tensor  # float32 [tried], every candidate drawn, in draw order
    rejected: torch.Tensor  # uint8 [<= KEEP_REJECTED, H, W], the first rejected candidates
    threshold: float
    near_copies: int | None = None  # passing candidates dropped as near-copies; None: filter off
    copies: torch.Tensor | None = None  # uint8 [<= KEEP_REJECTED, H, W], the first of them

    @property
    def accepted(self) -> int:
        return len(self.scores)

    @property
    def tried(self) -> int:
        return len(self.candidate_scores)

    @property
    def passed(self) -> int:
        """Candidates at or above the threshold, including any drawn beyond the number wanted."""
        return int((self.candidate_scores >= self.threshold).sum())

    @property
    def acceptance_rate(self) -> float:
        return self.passed / self.tried if self.tried else float("nan")

    @property
    def shortfall(self) -> int:
        return self.wanted - self.accepted

    def summary(self) -> dict:
        return {
            "accepted": self.accepted,
            "wanted": self.wanted,
            "shortfall": self.shortfall,
            "tried": self.tried,
            "acceptance_rate": round(self.acceptance_rate, 6),
            "mean_score": round(float(self.scores.mean()), 6) if self.accepted else None,
            "mean_candidate_score": round(float(self.candidate_scores.nanmean()), 6) if self.tried else None,
        } | ({} if self.near_copies is None else {"near_copies_dropped": self.near_copies})


def _checked(images: torch.Tensor, scores: torch.Tensor, n: int, proposer: Proposer) -> tuple:
    """A proposer's answer, on the CPU, or a ValueError saying how it breaks the protocol."""
    name = type(proposer).__name__
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 3):
        raise ValueError(
            f"{name}.propose must return uint8 images [n, H, W], got {getattr(images, 'shape', images)}"
        )
    if not isinstance(scores, torch.Tensor) or scores.shape != (n,) or len(images) != n:
        raise ValueError(
            f"{name}.propose({n}) returned {len(images)} images and scores {tuple(scores.shape)}"
        )
    scores = scores.detach().float().cpu()
    if ((scores < 0) | (scores > 1)).any():
        raise ValueError(
            f"{name}.propose returned scores outside [0, 1]: {scores.min():.3g}..{scores.max():.3g}"
        )
    return images.cpu(), scores


def draw_class(
    proposer: Proposer,
    class_index: int,
    wanted: int,
    threshold: float,
    max_tries: int,
    batch_size: int,
    generator: torch.Generator,
    near_copy: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ClassDraw:
    """Draw batches of candidates until `wanted` pass `threshold` or `max_tries` were drawn.
    A NaN score never passes. `near_copy` (uint8 images -> bool per image): passing candidates it flags
    are dropped; those met before the class was complete are counted."""
    images, scores, candidate_scores, rejected, copies = [], [], [], [], []
    accepted = tried = kept_rejected = dropped = 0
    name = proposer.classes[class_index]
    bar = progress(total=wanted, desc=f"synthesize {name}", unit="img", leave=False)
    while accepted < wanted and tried < max_tries:
        n = min(batch_size, max_tries - tried)
        batch, batch_scores = _checked(*proposer.propose(class_index, n, generator), n, proposer)
        tried += n
        passed = batch_scores >= threshold
        take = passed.nonzero().squeeze(1)[: wanted - accepted]
        if near_copy is not None:
            take, batch_copies = _drop_copies(
                batch, passed.nonzero().squeeze(1), wanted - accepted, near_copy
            )
            dropped += len(batch_copies)
            copies.append(batch[batch_copies][: max(0, KEEP_REJECTED - sum(map(len, copies)))])
        images.append(batch[take])
        scores.append(batch_scores[take])
        candidate_scores.append(batch_scores)
        accepted += len(take)
        if kept_rejected < KEEP_REJECTED:
            rejected.append(batch[~passed][: KEEP_REJECTED - kept_rejected])
            kept_rejected += len(rejected[-1])
        bar.update(len(take))
    bar.close()
    empty_images = torch.zeros((0, 0, 0), dtype=torch.uint8)
    return ClassDraw(
        name=name,
        label=class_index,
        wanted=wanted,
        images=torch.cat(images) if images else empty_images,
        scores=torch.cat(scores) if scores else torch.zeros(0),
        candidate_scores=torch.cat(candidate_scores) if candidate_scores else torch.zeros(0),
        rejected=torch.cat(rejected) if rejected else empty_images,
        threshold=threshold,
        near_copies=dropped if near_copy is not None else None,
        copies=(torch.cat(copies) if copies else empty_images) if near_copy is not None else None,
    )


def _drop_copies(
    batch: torch.Tensor, passing: torch.Tensor, need: int, near_copy: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the passing candidates (indices, draw order): the first `need` that are not near-copies, and the
    near-copies met up to the last of those (all of them when the batch does not complete the class)."""
    is_copy = near_copy(batch[passing]) if len(passing) else torch.zeros(0, dtype=torch.bool)
    originals = (~is_copy).cumsum(0)
    reached = (originals >= need).nonzero()
    considered = int(reached[0]) + 1 if need > 0 and len(reached) else (len(passing) if need > 0 else 0)
    kept = passing[:considered][~is_copy[:considered]]
    return kept, passing[:considered][is_copy[:considered]]


def synthesize(
    proposer: Proposer,
    wanted: int,
    threshold: float,
    max_tries_factor: float,
    batch_size: int,
    generator: torch.Generator,
    near_copy: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[ClassDraw]:
    """Filtered draws for every class of the proposer. Deterministic given the generator's state (and the
    batch size, which sets how candidates are grouped): each class gets its own stream seeded from it."""
    class_seeds = torch.randint(0, 2**62, (len(proposer.classes),), generator=generator).tolist()
    max_tries = math.ceil(max_tries_factor * wanted)
    return [
        draw_class(
            proposer,
            c,
            wanted,
            threshold,
            max_tries,
            batch_size,
            torch.Generator().manual_seed(seed),
            near_copy,
        )
        for c, seed in enumerate(class_seeds)
    ]


# ----------------------------------------------------------------------------------------------- stage


def _import(target: str):
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise CxraugError(f"{module_name} is missing from this installation of cxraug") from None
    return getattr(module, attr)


def load_proposer(gan: str, model_dir: Path, device: torch.device) -> Proposer:
    if gan not in PROPOSERS:
        raise CxraugError(f"unknown GAN '{gan}'; choose one of {', '.join(PROPOSERS)}")
    if not Path(model_dir).is_dir():
        raise CxraugError(f"{model_dir}: no trained {gan} model; run `dvc repro {TRAIN_STAGES[gan]}` first")
    return _import(PROPOSERS[gan])(Path(model_dir), device)


@dataclass
class SynthesizeResult:
    draws: list[ClassDraw]
    seconds: float
    out_dir: Path
    run_id: str | None = None

    @property
    def accepted(self) -> int:
        return sum(d.accepted for d in self.draws)

    @property
    def tried(self) -> int:
        return sum(d.tried for d in self.draws)

    @property
    def candidates_per_second(self) -> float:
        return self.tried / self.seconds if self.seconds else float("nan")


def run_synthesize(
    params: SynthesizeParams,
    gan: str,
    model_dir: Path,
    out_dir: Path,
    metrics_path: Path | None,
    train_metrics: Path | None = None,
    prepared: Path | None = None,
) -> SynthesizeResult:
    """The DVC stage synthesize@<gan>: max(n_per_class) filtered images per class of the trained GAN.
    `prepared` (data/prepared) holds the real training images that `filter.drop_near_copies` compares with."""
    device = pick_device(params.device)
    proposer = load_proposer(gan, model_dir, device)
    near_copy = near_copy_filter(params, prepared, device) if params.filter.drop_near_copies else None
    return _run(
        proposer,
        params,
        pick_precision(device, params.precision),
        stage=f"synthesize@{gan}",
        gan=gan,
        model_dir=model_dir,
        gan_run=training_run_id(model_dir, train_metrics),
        out_dir=out_dir,
        metrics_path=metrics_path,
        wanted=max(params.n_per_class),
        required=min(params.n_per_class),
        near_copy=near_copy,
    )


def near_copy_filter(params: SynthesizeParams, prepared: Path | None, device: torch.device):
    """The near-copy test against data/prepared/train.npz (evaluate/memorisation.NearCopyFilter)."""
    from cxraug.data.datasets import load_split
    from cxraug.metrics.memorisation import NearCopyFilter

    if prepared is None:
        raise CxraugError(
            "synthesize.filter.drop_near_copies needs the prepared split (--prepared data/prepared)"
        )
    train = load_split(prepared, "train")
    if len(train) < 2:
        raise CxraugError(f"{prepared}/train.npz: the near-copy filter needs at least two training images")
    return NearCopyFilter(train.images, params.filter.copy_threshold, device)


def run_exemplars(
    params: SynthesizeParams,
    model_dir: Path,
    exemplars_dir: Path,
    label: str,
    n: int,
    image_size: int,
    out_dir: Path,
    metrics_path: Path | None = None,
) -> SynthesizeResult:
    """An unseen class: OpenGAN conditioned on the embeddings of a few exemplar images; n filtered images."""
    if not Path(model_dir).is_dir():
        raise CxraugError(f"{model_dir}: no trained opengan model; run `dvc repro train_opengan` first")
    exemplars = read_exemplars(Path(exemplars_dir), image_size)
    device = pick_device(params.device)
    proposer = _import(EXEMPLAR_PROPOSER)(Path(model_dir), exemplars, label, device)
    return _run(
        proposer,
        params,
        pick_precision(device, params.precision),
        stage="synthesize-exemplars",
        gan="opengan",
        model_dir=model_dir,
        gan_run=training_run_id(model_dir),
        out_dir=out_dir,
        metrics_path=metrics_path,
        wanted=n,
        required=n,
        extra_tags={"exemplars.dir": str(exemplars_dir), "exemplars.count": str(len(exemplars))},
    )


def _run(
    proposer: Proposer,
    params: SynthesizeParams,
    precision: Precision,
    *,
    stage: str,
    gan: str,
    model_dir: Path,
    gan_run: str | None,
    out_dir: Path,
    metrics_path: Path | None,
    wanted: int,
    required: int,
    extra_tags: dict[str, str] | None = None,
    near_copy=None,
) -> SynthesizeResult:
    generator = torch.Generator().manual_seed(params.seed)
    threshold = params.filter.threshold_for(gan)  # 0 for an unfiltered GAN: every candidate passes
    start = time.perf_counter()
    with torch.inference_mode(), precision.autocast():
        draws = synthesize(
            proposer,
            wanted,
            threshold,
            params.filter.max_tries_factor,
            params.batch_size,
            generator,
            near_copy,
        )
    result = SynthesizeResult(draws, time.perf_counter() - start, Path(out_dir))
    write_synthetic(draws, Path(out_dir))
    result.run_id = log_to_mlflow(result, params, stage, gan, model_dir, gan_run, precision, extra_tags or {})
    if metrics_path is not None:
        atomic_write_json(
            metrics_path,
            {
                "gan": gan,
                "threshold": threshold,
                "filtered": gan not in params.filter.unfiltered,
                "wanted_per_class": wanted,
                "accepted": result.accepted,
                "tried": result.tried,
                "acceptance_rate": round(sum(d.passed for d in draws) / max(result.tried, 1), 6),
                "per_class": {d.name: d.summary() for d in draws},
                "shortfall": {d.name: d.shortfall for d in draws if d.shortfall},
                "candidates_per_second": round(result.candidates_per_second, 1),
                "mlflow_run_id": result.run_id,
                "gan_run_id": gan_run,
            }
            | ({} if near_copy is None else {"near_copies": _near_copy_summary(draws, near_copy)}),
        )
    short = {d.name: d.accepted for d in draws if d.accepted < required}
    if short:
        raise CxraugError(
            f"{gan}: too few candidates passed threshold {threshold} within "
            f"{params.filter.max_tries_factor:g}x tries: accepted {short}, need {required} per class "
            f"(wrote them to {out_dir}; see the score histograms in MLflow run {result.run_id}); lower "
            "synthesize.filter.threshold or raise synthesize.filter.max_tries_factor"
        )
    return result


def _near_copy_summary(draws: list[ClassDraw], near_copy) -> dict:
    return {
        "dropped": sum(d.near_copies or 0 for d in draws),
        "per_class": {d.name: d.near_copies for d in draws},
        "copy_threshold": near_copy.copy_threshold,
        "threshold_rmse": round(near_copy.threshold, 6),
        "real_nn_median_rmse": round(near_copy.reference, 6),
    }
