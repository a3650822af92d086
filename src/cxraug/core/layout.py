"""Every path of the DVC pipeline, in one place: the CLI's defaults, the stages and `dvc.yaml` (whose
`cmd`s pass these same paths; tests/stages/test_dvc_yaml.py compares them) all read them from here.
Paths are relative to the project root, where `dvc repro` runs."""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PREPARED = Path("data/prepared")
MODELS = Path("models")
EMBEDDERS = MODELS / "embedder"  # seed<k>.pt: one per generator replicate
CLASSIFIERS = MODELS / "classifier"
SYNTHETIC = Path("data/synthetic")
SCORES = Path("data/scores")
METRICS = Path("metrics")
CLASSIFY_METRICS = METRICS / "classify"
SYNTHESIZE_METRICS = METRICS / "synthesize"
GAN_METRICS = METRICS / "gan"
COMPARE = METRICS / "compare.json"
SUMMARY = METRICS / "summary"  # the DVC metrics: a few numbers per stage (stages/summary.py)
CHECKPOINTS = Path("checkpoints")
ROC_PLOTS = Path("plots/roc")
REPORTS = Path("reports")
EXTERNAL_SCORES = SCORES / "external"  # external-test: <NAME>/<V>.npz
EXTERNAL_METRICS = METRICS / "external"  # external-test: <NAME>/<V>.json


def replicate(seed: int) -> str:
    """The name of generator replicate `seed` in every path below (replicates.generator_seeds)."""
    return f"seed{seed}"


def stage_metrics(stage: str) -> Path:
    """metrics/<stage>.json of a single-instance stage (prepare, ...)."""
    return METRICS / f"{stage}.json"


def replicate_metrics(stage: str, seed: int) -> Path:
    """metrics/<stage>/seed<k>.json of one replicate of a generator's training stage."""
    return METRICS / stage / f"{replicate(seed)}.json"


def checkpoints(stage: str, seed: int | None = None) -> Path:
    return CHECKPOINTS / stage if seed is None else CHECKPOINTS / stage / replicate(seed)


def model_dir(gan: str, seed: int = 0) -> Path:
    return MODELS / gan / replicate(seed)


def embedder(seed: int = 0) -> Path:
    return EMBEDDERS / f"{replicate(seed)}.pt"


def synthetic_dir(gan: str, seed: int = 0) -> Path:
    return SYNTHETIC / gan / replicate(seed)


def synthesize_metrics(gan: str, seed: int = 0) -> Path:
    return SYNTHESIZE_METRICS / gan / f"{replicate(seed)}.json"


def filter_set(gan: str, mode: str) -> str:
    """The image set drawn from `gan` under filter `mode` for the filter-sensitivity row: its name in
    synthetic_dir and synthesize_metrics (data/synthetic/bagan-filter-argmax/seed0, ...)."""
    return f"{gan}-filter-{mode}"


def gan_metrics(gan: str) -> Path:
    return GAN_METRICS / f"{gan}.json"


# each stage's own files, by name (the CLI's defaults: replicate 0)
PREPARE_METRICS = stage_metrics("prepare")
EMBEDDER = embedder(0)
BAGAN_MODELS = model_dir("bagan")
OPENGAN_MODELS = model_dir("opengan")
TRAIN_BAGAN_METRICS = replicate_metrics("train_bagan", 0)
TRAIN_BAGAN_CHECKPOINTS = checkpoints("train_bagan", 0)
TRAIN_EMBEDDER_METRICS = replicate_metrics("train_embedder", 0)
TRAIN_EMBEDDER_CHECKPOINTS = checkpoints("train_embedder", 0)
TRAIN_OPENGAN_METRICS = replicate_metrics("train_opengan", 0)
TRAIN_OPENGAN_CHECKPOINTS = checkpoints("train_opengan", 0)
DIFFUSION_MODELS = model_dir("diffusion")
TRAIN_DIFFUSION_METRICS = replicate_metrics("train_diffusion", 0)
TRAIN_DIFFUSION_CHECKPOINTS = checkpoints("train_diffusion", 0)


def external_scores(name: str, variant: str) -> Path:
    """Variant V's scores on external set NAME (docs/external.md)."""
    return EXTERNAL_SCORES / name / f"{variant}.npz"


def external_metrics(name: str, variant: str) -> Path:
    return EXTERNAL_METRICS / name / f"{variant}.json"
