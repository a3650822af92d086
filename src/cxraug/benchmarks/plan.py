"""The planned work of a whole `dvc repro` and its projected wall time: pure arithmetic, no timing.

`planned_work(params, sizes)` reads from the params what every stage of dvc.yaml will do (generators x
replicates.generator_seeds training runs, classifier variants x seeds x budget, synthesis, gan_metrics)
and counts it in images through a net; `project(work, rates)` divides each part by its measured rate
(images/s) and `total` adds the parts. What it leaves out (stated in the table's footnote): prepare
(decoding NIH's PNGs, once), per-epoch grids and checkpoints of the generators, the filter's rejected
candidates (synthesis counts one candidate per kept image: a lower bound), the memorisation audit's
nearest-neighbour search and the report's bootstrap (seconds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cxraug.benchmarks.common import table
from cxraug.classifier.variants import REBALANCING
from cxraug.core.config import ClassifyParams, Params
from cxraug.core.errors import CxraugError
from cxraug.core.training import steps_per_epoch
from cxraug.gans import registry

# single-label images per class in the full NIH ChestX-ray14 metadata (docs: shared/paper.md)
NIH_COUNTS = {
    "No Finding": 60361,
    "Infiltration": 9547,
    "Atelectasis": 4215,
    "Effusion": 3955,
    "Nodule": 2705,
}

# the measured rates a projection needs (images/s through the net); synthesis adds sample:<gan>
TRAIN_RATES = {
    "bagan": ("bagan:autoencoder", "bagan:gan"),
    "opengan": ("opengan:gan",),
    "diffusion": ("diffusion:diffusion",),
}
EMBEDDER = "embedder"
CLASSIFIER_TRAIN = "classifier:train"
CLASSIFIER_PREDICT = "classifier:predict"


def sample_rate(gan: str) -> str:
    return f"sample:{gan}"


@dataclass(frozen=True)
class Sizes:
    """Images in each split of the prepared data."""

    train: int
    val: int
    test: int

    @classmethod
    def nih(cls, params: Params) -> Sizes:
        """The split sizes of the full NIH data at params' classes, cap and fractions (patient grouping
        moves a few images between splits; the projection does not need them exact)."""
        p = params.prepare
        missing = [c for c in p.classes if c not in NIH_COUNTS]
        if missing:
            raise CxraugError(
                f"no NIH count for class(es) {missing}: pass the split sizes (--train-images ...)"
            )
        cap = p.max_per_class or math.inf
        n = sum(min(NIH_COUNTS[c], cap) for c in p.classes)
        val, test = round(n * p.val_fraction), round(n * p.test_fraction)
        return cls(n - val - test, val, test)


@dataclass(frozen=True)
class Work:
    """One part of the pipeline: `images` through the net whose measured rate is `rate`."""

    part: str
    rate: str  # key into the measured rates
    images: float
    detail: str  # how the count came about


@dataclass(frozen=True)
class Part:
    work: Work
    rate: float  # images/s
    seconds: float


def _generator_runs(params: Params, sizes: Sizes) -> list[Work]:
    seeds = len(params.replicates.generator_seeds)
    out = []
    e = params.train_embedder
    e_steps = e.epochs * steps_per_epoch(sizes.train, e.batch_size, e.steps_per_epoch)
    out.append(
        Work(
            "train_embedder",
            EMBEDDER,
            seeds * e_steps * e.batch_size,
            f"{seeds} seeds x {e_steps:,} steps x {e.batch_size}",
        )
    )
    for gan in params.generators:
        p = getattr(params, registry.get(gan).section)
        per_epoch = steps_per_epoch(sizes.train, p.batch_size, getattr(p, "steps_per_epoch", None))
        for rate in TRAIN_RATES[gan]:
            phase = rate.split(":")[1]
            epochs = p.ae_epochs if phase == "autoencoder" else p.epochs
            steps = epochs * per_epoch
            out.append(
                Work(
                    f"train_{gan}: {phase}",
                    rate,
                    seeds * steps * p.batch_size,
                    f"{seeds} seeds x {epochs} epochs x {per_epoch:,} steps x {p.batch_size}",
                )
            )
    return out


def classifier_images(p: ClassifyParams, train_images: int) -> tuple[int, int]:
    """(training images, evaluation rounds) of one classifier training run on `train_images` images,
    run to its budget (early stopping can only shorten it)."""
    if p.budget == "steps":
        return p.steps * p.batch_size, -(-p.steps // p.eval_every)
    return p.epochs * train_images, p.epochs


def _classifier_runs(params: Params, sizes: Sizes) -> list[Work]:
    p, n_seeds = params.classify, len(params.classify.seeds)
    k, ns = len(params.prepare.classes), params.synthesize.n_per_class
    gen_seeds = len(params.replicates.generator_seeds)
    # (label, runs, training-set size) per group of variants
    groups = [(f"classify: {', '.join(REBALANCING)}", n_seeds, [sizes.train] * len(REBALANCING))]
    groups.append((f"classify: standard_aug x {len(ns)} n", n_seeds, [sizes.train + n * k for n in ns]))
    for gan in params.generators:
        groups.append(
            (f"classify: {gan} x {len(ns)} n", gen_seeds * n_seeds, [sizes.train + n * k for n in ns])
        )
    out = []
    for label, runs, train_sizes in groups:
        trained = sum(classifier_images(p, n)[0] for n in train_sizes)
        rounds = classifier_images(p, sizes.train)[1]
        evaluated = len(train_sizes) * (rounds * sizes.val + sizes.test)
        detail = f"{len(train_sizes)} variants x {runs} runs"
        out.append(
            Work(f"{label} (train)", CLASSIFIER_TRAIN, runs * trained, detail + f", {p.budget} budget")
        )
        out.append(
            Work(
                f"{label} (val/test scoring)",
                CLASSIFIER_PREDICT,
                runs * evaluated,
                detail + f" x ({rounds} val rounds x {sizes.val:,} + {sizes.test:,} test)",
            )
        )
    return out


def _synthesis(params: Params) -> list[Work]:
    k, n = len(params.prepare.classes), max(params.synthesize.n_per_class)
    seeds = len(params.replicates.generator_seeds)
    detail = f"{seeds} seeds x {n:,} x {k} classes"
    return [Work(f"synthesize: {gan}", sample_rate(gan), seeds * n * k, detail) for gan in params.generators]


def _gan_metrics(params: Params, sizes: Sizes) -> list[Work]:
    k, n = len(params.prepare.classes), max(params.synthesize.n_per_class)
    seeds, g = len(params.replicates.generator_seeds), params.gan_metrics
    out = []
    runs = len(params.generators) * seeds
    features = len(g.extractors) * (n * k + sizes.train + sizes.val)
    out.append(
        Work(
            "gan_metrics: features",
            CLASSIFIER_PREDICT,
            runs * features,
            f"{runs} runs x {len(g.extractors)} extractors x (synthetic + train + val)",
        )
    )
    if g.cas.enabled:
        p = params.classify
        if g.cas.epochs is not None:
            p = p.model_copy(update={"budget": "epochs", "epochs": g.cas.epochs})  # as the stage does
        cas_runs = runs * len(g.cas.seeds)
        trained, rounds = classifier_images(p, n * k)
        out.append(Work("gan_metrics: CAS (train)", CLASSIFIER_TRAIN, cas_runs * trained, f"{cas_runs} runs"))
        out.append(
            Work(
                "gan_metrics: CAS (val/test scoring)",
                CLASSIFIER_PREDICT,
                cas_runs * (rounds * sizes.val + sizes.test),
                f"{cas_runs} runs x {rounds} val rounds",
            )
        )
    return out


def planned_work(params: Params, sizes: Sizes) -> list[Work]:
    """Every part of `dvc repro` that runs images through a net, in pipeline order."""
    return [
        *_generator_runs(params, sizes),
        *_synthesis(params),
        *_classifier_runs(params, sizes),
        *_gan_metrics(params, sizes),
    ]


def needed_rates(params: Params) -> list[str]:
    keys = [EMBEDDER, *(r for gan in params.generators for r in TRAIN_RATES[gan])]
    return [*keys, CLASSIFIER_TRAIN, CLASSIFIER_PREDICT, *(sample_rate(g) for g in params.generators)]


def project(work: Sequence[Work], rates: Mapping[str, float]) -> list[Part]:
    """Each part's time: its images / its rate."""
    missing = sorted({w.rate for w in work} - set(rates))
    if missing:
        raise CxraugError(f"no measured rate for {missing}")
    return [Part(w, rates[w.rate], w.images / rates[w.rate]) for w in work]


def total(parts: Sequence[Part]) -> float:
    return sum(p.seconds for p in parts)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.2f} h" if seconds >= 360 else f"{seconds:,.1f} s"


def markdown(parts: Sequence[Part]) -> str:
    rows = [
        [p.work.part, p.work.rate, f"{p.rate:,.1f}", f"{p.work.images:,.0f}", p.work.detail, hours(p.seconds)]
        for p in parts
    ]
    rows.append(
        ["**total**", "", "", f"{sum(p.work.images for p in parts):,.0f}", "", f"**{hours(total(parts))}**"]
    )
    header = ["part", "rate", "measured img/s", "planned images", "planned work", "time"]
    return table(header, rows, "llrrlr")
