"""`cxraug bench study`: the projected wall time of the whole `dvc repro` on the device at hand.

Rates are measured at full scale, i.e. with params.yaml's nets, widths, batches, image size and
precision: every generator's real training function (through the registry) for a few steps, timed by its
`on_step` hook (so the rates include our per-step machinery), then its Proposer drawing one synthesis
batch per class; the embedder likewise; the classifier's train step (train_classifier, steps budget) and
its val/test scoring (predict_proba at eval_batch_size). The data are demo phantoms prepared at the
configured size: a step's cost does not depend on how many images the split holds (they sit in memory).
The plan arithmetic is benchmarks/plan.py.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cxraug.benchmarks import plan
from cxraug.benchmarks.common import load_average, machine, measure, synchronize
from cxraug.benchmarks.workspace import make_workspace, temporary_tracking
from cxraug.classifier.predict import predict_proba
from cxraug.classifier.train import train_classifier
from cxraug.core.config import Params
from cxraug.core.runtime import pick_device, pick_precision
from cxraug.core.stage import Hooks
from cxraug.data.datasets import load_split
from cxraug.gans import registry
from cxraug.gans.opengan.train_embedder import train_embedder


@dataclass(frozen=True)
class Rate:
    images_per_second: float
    note: str  # what was timed


class PhaseClock:
    """An `on_step` hook timestamping the steps of each phase ((phase, step, nets) calls)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)

    def __call__(self, phase: str, *_) -> None:
        synchronize()
        self.times[phase].append(time.perf_counter())

    def median_step(self, phase: str) -> float:
        t = self.times[phase]
        if len(t) < 2:
            raise RuntimeError(f"phase {phase!r}: {len(t)} steps timed, need >= 2")
        return statistics.median(b - a for a, b in zip(t, t[1:], strict=False))


def _short(section, steps: int, train_images: int):
    """The section with a schedule of about `steps` steps per phase (one epoch where it can say so) and
    one-image-per-class epoch grids (per-epoch work is not what the rates measure; the diffusion grid
    alone is minutes on a CPU)."""
    fields = type(section).model_fields
    if "grid_per_class" in fields:
        section = section.model_copy(update={"grid_per_class": 1})
    if "steps_per_epoch" in fields:
        return section.model_copy(update={"epochs": 1, "steps_per_epoch": steps})
    per_epoch = max(1, train_images // section.batch_size)
    epochs = math.ceil(steps / per_epoch)
    return section.model_copy(
        update={"epochs": epochs, **({"ae_epochs": epochs} if "ae_epochs" in fields else {})}
    )


def _sampling(proposer, classes: int, n: int) -> float:
    """Candidates/s of the Proposer: one call of n per class, after a warm-up call."""
    g = torch.Generator().manual_seed(0)
    proposer.propose(0, min(n, 2), g)
    start = time.perf_counter()
    for c in range(classes):
        proposer.propose(c, n, g)
    return classes * n / (time.perf_counter() - start)


def measure_rates(
    params: Params, prepared: Path, work: Path, steps: int, sample: int, on_rate: Callable[[str, Rate], None]
) -> dict[str, Rate]:
    """Every rate plan.needed_rates(params) names, measured here; `on_rate` sees each as it comes (a full
    run is many minutes on a CPU)."""
    train = load_split(prepared, "train")
    k = train.n_classes
    rates: dict[str, Rate] = {}

    def put(key: str, rate: Rate) -> None:
        rates[key] = rate
        on_rate(key, rate)

    clock = PhaseClock()
    e = _short(params.train_embedder, steps, len(train))
    embedder = work / "embedder" / "embedder.pt"
    train_embedder(
        e, prepared, embedder, work / "embedder.json", work / "ckpt-embedder", Hooks(on_step=clock)
    )
    put(plan.EMBEDDER, Rate(e.batch_size / clock.median_step("embedder"), f"batch {e.batch_size}"))
    for name in params.generators:
        gen, clock = registry.get(name), PhaseClock()
        p = _short(getattr(params, gen.section), steps, len(train))
        out = work / name
        gen.train(
            p, prepared, out / "model", out / "metrics.json", out / "ckpt", Hooks(on_step=clock), embedder
        )
        for key in plan.TRAIN_RATES[name]:
            phase = key.split(":")[1]
            put(key, Rate(p.batch_size / clock.median_step(phase), f"batch {p.batch_size}"))
        proposer = gen.load_proposer(out / "model", pick_device(params.synthesize.device))
        put(plan.sample_rate(name), Rate(_sampling(proposer, k, sample), f"{sample} per class, {k} classes"))

    c = params.classify.model_copy(update={"budget": "steps", "steps": steps + 1, "eval_every": steps + 1})
    val = load_split(prepared, "val")
    step_clock = PhaseClock()
    trained = train_classifier(
        train.images, train.labels, val, c, seed=0, on_step=lambda s: step_clock("step")
    )
    put(plan.CLASSIFIER_TRAIN, Rate(c.batch_size / step_clock.median_step("step"), f"batch {c.batch_size}"))
    precision = trained.precision or pick_precision(pick_device(c.device), c.precision)
    n = c.eval_batch_size
    images = train.images[torch.arange(n) % len(train)]
    scoring = measure("predict", lambda: predict_proba(trained.model, images, precision, n), n, 1, 3)
    put(plan.CLASSIFIER_PREDICT, Rate(scoring.per_second, f"batch {n}, {precision.describe()}"))
    return rates


@dataclass(frozen=True)
class Study:
    machine: str
    load: tuple[str, str]  # load average before, after
    sizes: plan.Sizes
    rates: dict[str, Rate]
    parts: list[plan.Part]
    seconds: float  # wall time of the measurement


def run(
    params: Params,
    sizes: plan.Sizes,
    steps: int = 6,
    sample: int | None = None,
    n_images: int = 400,
    on_rate: Callable[[str, Rate], None] = lambda key, rate: None,
) -> Study:
    """Measure the rates on `n_images` demo phantoms (MLflow into a throwaway store) and project."""
    started, before = time.perf_counter(), load_average()
    sample = sample or params.synthesize.batch_size
    with temporary_tracking(), tempfile.TemporaryDirectory(prefix="cxraug-bench-study-") as tmp:
        ws = make_workspace(Path(tmp), n_images, params.prepare.image_size, (), 0)
        rates = measure_rates(params, ws.prepared, Path(tmp), steps, sample, on_rate)
    work = plan.planned_work(params, sizes)
    parts = plan.project(work, {key: r.images_per_second for key, r in rates.items()})
    return Study(machine(), (before, load_average()), sizes, rates, parts, time.perf_counter() - started)


def markdown(study: Study) -> str:
    s = study.sizes
    rate_rows = "\n".join(
        f"- {key}: {r.images_per_second:,.1f} img/s ({r.note})" for key, r in study.rates.items()
    )
    return (
        f"Machine: {study.machine}. Load average before {study.load[0]}, after {study.load[1]}; "
        f"rates measured in {study.seconds:.0f} s.\n\n"
        f"Splits planned: {s.train:,} train, {s.val:,} val, {s.test:,} test images.\n\n"
        f"Measured rates (full-size nets from the params):\n\n{rate_rows}\n\n"
        f"{plan.markdown(study.parts)}\n\n"
        f"Projected `dvc repro`: **{plan.hours(plan.total(study.parts))}** on this device, one stage at a "
        "time. Classifier runs are counted to their full budget (early stopping only shortens them); "
        "synthesis counts one candidate per kept image (the filter's rejects add to it); left out: "
        "prepare, the generators' per-epoch grids and checkpoints, the memorisation audit's search, the "
        "report.\n"
    )
