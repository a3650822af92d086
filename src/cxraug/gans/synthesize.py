"""`synthesize` stage: draw class-conditional candidates from a trained GAN and keep only those the model
itself accepts as the intended class (BAGAN: its discriminator's K+1 softmax; OpenGAN: realness and the
embedder's nearest class), then write them as PNGs with an index.

Policy, per class:
- candidates are drawn in batches of `batch_size` until max(n_per_class) pass the threshold or
  ceil(max_tries_factor x wanted) candidates have been drawn (the last batch is shortened to the cap);
- accepted images keep their draw order, so the first n of a class are what a variant with n synthetic
  images per class trains on (`load_synthetic`), and the n=1000 set is a prefix of the n=3000 set;
- a class that falls short of max(n_per_class) is written anyway and its shortfall recorded; the stage
  fails, after writing and logging (so the score histograms show why), only when some class has fewer
  than min(n_per_class) images, i.e. when not even the smallest variant could be trained;
- each class draws from its own generator, seeded from `seed`: a class's images do not change when
  another class needs more or fewer tries.

Layout (the contract with `classify`): <out>/<class_slug>/<00000>.png (8-bit gray) and <out>/index.csv
with columns file (relative to <out>), class, label, score, in acceptance order.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch
from PIL import Image

from cxraug.config import SynthesizeParams
from cxraug.data.images import BadImage, load_gray
from cxraug.errors import CxraugError
from cxraug.runtime import (
    Precision,
    atomic_dir,
    atomic_write_json,
    pick_device,
    pick_precision,
    progress,
    slug,
)

log = logging.getLogger(__name__)

# Imported only when used, so each GAN's module (and its dependencies) loads only for its own stage.
PROPOSERS = {"bagan": "cxraug.gans.bagan:load_proposer", "opengan": "cxraug.gans.opengan:load_proposer"}
EXEMPLAR_PROPOSER = "cxraug.gans.opengan:load_exemplar_proposer"
TRAIN_STAGES = {"bagan": "train_bagan", "opengan": "train_opengan"}
INDEX_COLUMNS = ["file", "class", "label", "score"]
EXEMPLAR_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
WRITERS = 8  # threads writing PNGs
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
        }


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
) -> ClassDraw:
    """Draw batches of candidates until `wanted` pass `threshold` or `max_tries` were drawn.
    A NaN score never passes."""
    images, scores, candidate_scores, rejected = [], [], [], []
    accepted = tried = kept_rejected = 0
    name = proposer.classes[class_index]
    bar = progress(total=wanted, desc=f"synthesize {name}", unit="img", leave=False)
    while accepted < wanted and tried < max_tries:
        n = min(batch_size, max_tries - tried)
        batch, batch_scores = _checked(*proposer.propose(class_index, n, generator), n, proposer)
        tried += n
        passed = batch_scores >= threshold
        take = passed.nonzero().squeeze(1)[: wanted - accepted]
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
    )


def synthesize(
    proposer: Proposer,
    wanted: int,
    threshold: float,
    max_tries_factor: float,
    batch_size: int,
    generator: torch.Generator,
) -> list[ClassDraw]:
    """Filtered draws for every class of the proposer. Deterministic given the generator's state (and the
    batch size, which sets how candidates are grouped): each class gets its own stream seeded from it."""
    class_seeds = torch.randint(0, 2**62, (len(proposer.classes),), generator=generator).tolist()
    max_tries = math.ceil(max_tries_factor * wanted)
    return [
        draw_class(proposer, c, wanted, threshold, max_tries, batch_size, torch.Generator().manual_seed(seed))
        for c, seed in enumerate(class_seeds)
    ]


# ----------------------------------------------------------------------------------------------- files


def write_synthetic(draws: list[ClassDraw], out_dir: Path) -> pd.DataFrame:
    """Write every accepted image and index.csv into a fresh directory that replaces `out_dir` whole."""
    slugs = [slug(d.name) for d in draws]
    if len(set(slugs)) != len(slugs):
        raise CxraugError(f"class names {[d.name for d in draws]} share a folder name; rename a class")
    rows, images = [], []
    for draw, folder in zip(draws, slugs, strict=True):
        for i, (image, score) in enumerate(zip(draw.images.numpy(), draw.scores.tolist(), strict=True)):
            rows.append((f"{folder}/{i:05d}.png", draw.name, draw.label, round(score, 6)))
            images.append(image)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    with atomic_dir(out_dir) as tmp:
        for folder in slugs:
            (tmp / folder).mkdir()
        # file creation dominates on slow file systems; threads overlap it (measured 2-3x on 2 cores)
        with ThreadPoolExecutor(WRITERS) as pool:
            done = pool.map(
                lambda job: Image.fromarray(job[1]).save(tmp / job[0]),
                zip(index["file"], images, strict=True),
            )
            for _ in progress(done, total=len(images), desc="write PNGs", unit="img", leave=False):
                pass
        index.to_csv(tmp / "index.csv", index=False)
    return index


def read_index(directory: Path) -> pd.DataFrame:
    path = Path(directory) / "index.csv"
    if not path.is_file():
        raise CxraugError(f"{path}: not found; run `dvc repro synthesize@{Path(directory).name}` first")
    index = pd.read_csv(path, dtype={"file": str, "class": str})
    if list(index.columns) != INDEX_COLUMNS:
        raise CxraugError(
            f"{path}: columns {list(index.columns)}, expected {INDEX_COLUMNS}; rerun synthesize"
        )
    return index


def load_synthetic(
    directory: str | Path, n_per_class: int, classes: tuple[str, ...] | list[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n_per_class` accepted images of every class (in acceptance order) as uint8 [N, H, W] and
    int64 labels, class by class. With `classes`, the index's label numbers must name the same classes and
    every one of them must have `n_per_class` images; without, the classes found in index.csv are used."""
    directory = Path(directory)
    index = read_index(directory)
    named = dict(zip(index["label"], index["class"], strict=False))
    labels = range(len(classes)) if classes is not None else sorted(named)
    if classes is not None:
        wrong = {
            label: name for label, name in named.items() if label >= len(classes) or classes[label] != name
        }
        if wrong:
            raise CxraugError(
                f"{directory}/index.csv labels {wrong} do not match the classes {list(classes)}; "
                "rerun synthesize with the GAN trained on these classes"
            )
    files = []
    for label in labels:
        rows = index[index["label"] == label]
        if len(rows) < n_per_class:
            name = classes[label] if classes is not None else named[label]
            raise CxraugError(
                f"{directory} holds {len(rows)} images of class '{name}', {n_per_class} are needed; "
                "see the shortfall in its metrics/synthesize JSON (lower synthesize.filter.threshold or "
                "raise max_tries_factor)"
            )
        files += rows["file"].head(n_per_class).tolist()
    images = [read_png(directory / f) for f in progress(files, desc="read synthetic", unit="img")]
    if len({a.shape for a in images}) > 1:
        raise CxraugError(f"{directory}: images of different sizes {sorted({a.shape for a in images})}")
    stacked = torch.from_numpy(np.stack(images)) if images else torch.zeros((0, 0, 0), dtype=torch.uint8)
    return stacked, torch.tensor(list(labels), dtype=torch.int64).repeat_interleave(n_per_class)


def read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode != "L":
                raise CxraugError(f"{path}: mode {image.mode}, expected 8-bit gray (L); rerun synthesize")
            return np.asarray(image, dtype=np.uint8)
    except (FileNotFoundError, OSError) as e:
        raise CxraugError(f"{path}: listed in index.csv but unreadable ({e}); rerun synthesize") from None


def read_exemplars(directory: Path, image_size: int) -> torch.Tensor:
    """Every readable image of `directory` (any size or mode) as uint8 [M, size, size]; unreadable files are
    logged and skipped."""
    if not directory.is_dir():
        raise CxraugError(f"{directory}: no such directory of exemplar images")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in EXEMPLAR_SUFFIXES)
    images = []
    for f in files:
        try:
            images.append(load_gray(f, image_size))
        except BadImage as e:
            log.warning("skipping exemplar %s", e)
    if not images:
        raise CxraugError(
            f"{directory}: no readable exemplar images ({len(files)} image files, "
            f"suffixes {sorted(EXEMPLAR_SUFFIXES)})"
        )
    if len(images) < len(files):
        log.warning(
            "%d of %d exemplar files were unreadable and skipped", len(files) - len(images), len(files)
        )
    return torch.from_numpy(np.stack(images))


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


def training_run_id(model_dir: Path, train_metrics: Path | None = None) -> str | None:
    """The MLflow run that trained the model: from a JSON file of the model directory that records it,
    else from the training stage's metrics file (metrics/train_<gan>.json)."""
    candidates = sorted(Path(model_dir).glob("*.json")) + ([Path(train_metrics)] if train_metrics else [])
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("mlflow_run_id"), str):
            return data["mlflow_run_id"]
    return None


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
) -> SynthesizeResult:
    """The DVC stage synthesize@<gan>: max(n_per_class) filtered images per class of the trained GAN."""
    device = pick_device(params.device)
    proposer = load_proposer(gan, model_dir, device)
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
    )


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
) -> SynthesizeResult:
    generator = torch.Generator().manual_seed(params.seed)
    start = time.perf_counter()
    with torch.inference_mode(), precision.autocast():
        draws = synthesize(
            proposer,
            wanted,
            params.filter.threshold,
            params.filter.max_tries_factor,
            params.batch_size,
            generator,
        )
    result = SynthesizeResult(draws, time.perf_counter() - start, Path(out_dir))
    write_synthetic(draws, Path(out_dir))
    result.run_id = log_to_mlflow(result, params, stage, gan, model_dir, gan_run, precision, extra_tags or {})
    if metrics_path is not None:
        atomic_write_json(
            metrics_path,
            {
                "gan": gan,
                "threshold": params.filter.threshold,
                "wanted_per_class": wanted,
                "accepted": result.accepted,
                "tried": result.tried,
                "acceptance_rate": round(sum(d.passed for d in draws) / max(result.tried, 1), 6),
                "per_class": {d.name: d.summary() for d in draws},
                "shortfall": {d.name: d.shortfall for d in draws if d.shortfall},
                "candidates_per_second": round(result.candidates_per_second, 1),
                "mlflow_run_id": result.run_id,
                "gan_run_id": gan_run,
            },
        )
    short = {d.name: d.accepted for d in draws if d.accepted < required}
    if short:
        raise CxraugError(
            f"{gan}: too few candidates passed threshold {params.filter.threshold} within "
            f"{params.filter.max_tries_factor:g}x tries: accepted {short}, need {required} per class "
            f"(wrote them to {out_dir}; see the score histograms in MLflow run {result.run_id}); lower "
            "synthesize.filter.threshold or raise synthesize.filter.max_tries_factor"
        )
    return result


def score_histograms(draws: list[ClassDraw]):
    """One panel per class: candidate scores that passed vs were rejected, and the threshold."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.2 * len(draws), 2.8), layout="constrained")
    bins = np.linspace(0, 1, 41)
    for ax, d in zip(fig.subplots(1, len(draws), squeeze=False)[0], draws, strict=True):
        s = d.candidate_scores.numpy()
        ax.hist(s[s >= d.threshold], bins=bins, color="tab:green", label="passed")
        ax.hist(s[s < d.threshold], bins=bins, color="tab:red", alpha=0.7, label="rejected")
        ax.axvline(d.threshold, color="k", linestyle="--", linewidth=1)
        ax.set_title(f"{d.name}\n{d.accepted}/{d.wanted} kept, {d.acceptance_rate:.0%} pass", fontsize=9)
        ax.set_xlabel("score")
    fig.axes[0].set_ylabel("candidates")
    fig.axes[0].legend(fontsize=8)
    return fig


def log_to_mlflow(
    result: SynthesizeResult,
    params: SynthesizeParams,
    stage: str,
    gan: str,
    model_dir: Path,
    gan_run: str | None,
    precision: Precision,
    extra_tags: dict[str, str],
) -> str:
    import mlflow

    from cxraug import tracking

    tags = {"gan": gan, "gan.run_id": gan_run or "unknown", "precision": precision.describe(), **extra_tags}
    with tracking.stage_run(
        experiment="synthesize", stage=stage, params=params, inputs=[model_dir], extra_tags=tags
    ) as run_id:
        metrics = {"seconds": result.seconds, "candidates_per_second": result.candidates_per_second}
        for d in result.draws:
            s = slug(d.name)
            metrics |= {
                f"accepted.{s}": d.accepted,
                f"tried.{s}": d.tried,
                f"acceptance_rate.{s}": d.acceptance_rate,
                f"shortfall.{s}": d.shortfall,
            }
            if d.accepted:
                metrics[f"mean_score.{s}"] = float(d.scores.mean())
                tracking.log_grid(d.images[:64], key=f"accepted/{s}")
            if len(d.rejected):
                tracking.log_grid(d.rejected, key=f"rejected/{s}")
        mlflow.log_metrics(metrics)
        mlflow.log_figure(score_histograms(result.draws), "score_histograms.png")
        if (result.out_dir / "index.csv").is_file():
            mlflow.log_artifact(str(result.out_dir / "index.csv"))
    return run_id
