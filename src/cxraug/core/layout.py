"""Every path of the DVC pipeline, in one place: the CLI's defaults, the stages and `dvc.yaml` (whose
`cmd`s pass these same paths; tests/stages/test_dvc_yaml.py compares them) all read them from here.
Paths are relative to the project root, where `dvc repro` runs."""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PREPARED = Path("data/prepared")
MODELS = Path("models")
EMBEDDER = MODELS / "embedder.pt"
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


def stage_metrics(stage: str) -> Path:
    """metrics/<stage>.json of a single-instance stage (prepare, train_bagan, ...)."""
    return METRICS / f"{stage}.json"


def checkpoints(stage: str) -> Path:
    return CHECKPOINTS / stage


def model_dir(gan: str) -> Path:
    return MODELS / gan


def synthetic_dir(gan: str) -> Path:
    return SYNTHETIC / gan


def synthesize_metrics(gan: str) -> Path:
    return SYNTHESIZE_METRICS / f"{gan}.json"


def gan_metrics(gan: str) -> Path:
    return GAN_METRICS / f"{gan}.json"


# each stage's own files, by name (the CLI's defaults)
PREPARE_METRICS = stage_metrics("prepare")
BAGAN_MODELS = model_dir("bagan")
OPENGAN_MODELS = model_dir("opengan")
TRAIN_BAGAN_METRICS, TRAIN_BAGAN_CHECKPOINTS = stage_metrics("train_bagan"), checkpoints("train_bagan")
TRAIN_EMBEDDER_METRICS = stage_metrics("train_embedder")
TRAIN_EMBEDDER_CHECKPOINTS = checkpoints("train_embedder")
TRAIN_OPENGAN_METRICS = stage_metrics("train_opengan")
TRAIN_OPENGAN_CHECKPOINTS = checkpoints("train_opengan")
DIFFUSION_MODELS = model_dir("diffusion")
TRAIN_DIFFUSION_METRICS = stage_metrics("train_diffusion")
TRAIN_DIFFUSION_CHECKPOINTS = checkpoints("train_diffusion")


def external_scores(name: str, variant: str) -> Path:
    """Variant V's scores on external set NAME (docs/external.md)."""
    return EXTERNAL_SCORES / name / f"{variant}.npz"


def external_metrics(name: str, variant: str) -> Path:
    return EXTERNAL_METRICS / name / f"{variant}.json"
