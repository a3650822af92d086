"""Typed settings: one pydantic model per `params.yaml` section.

Each field declares its allowed range where it is defined, so `params.yaml`, the error message and the
code agree. `load_params` validates the whole file and turns any problem into one line naming the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cxraug.core.errors import CxraugError

DEFAULT_CLASSES = ["No Finding", "Infiltration", "Atelectasis", "Effusion", "Nodule"]


class Section(BaseModel):
    """A params.yaml section: unknown keys are errors, values are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class PrepareParams(Section):
    classes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_CLASSES),
        min_length=2,
        description="NIH 'Finding Labels' to keep; only images carrying exactly one of them are used",
    )
    image_size: int = Field(64, description="output side in pixels: a power of two >= 32")
    train_fraction: float = Field(0.70, gt=0, lt=1, description="share of each class's images in train")
    val_fraction: float = Field(0.15, gt=0, lt=1, description="share in validation (early stopping)")
    test_fraction: float = Field(0.15, gt=0, lt=1, description="share in test (reported once)")
    use_official_split: bool = Field(
        False, description="test = NIH test_list.txt; val is carved from train_val_list.txt by patient"
    )
    max_per_class: int | None = Field(None, ge=1, description="cap of images per class, drawn with `seed`")
    on_bad_image: Literal["skip", "fail"] = Field(
        "skip", description="corrupt image: count and skip, or stop"
    )
    seed: int = Field(0, ge=0, description="seed of the patient split and of the per-class cap")
    workers: int = Field(0, ge=0, description="decoding processes; 0 = one per CPU core")

    @field_validator("image_size")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v < 32 or v & (v - 1):
            raise ValueError(f"must be a power of two >= 32 (got {v})")
        return v

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"class names must be distinct (got {v})")
        return v

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> PrepareParams:
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train_fraction + val_fraction + test_fraction must sum to 1 (got {total:.4g})")
        return self


class TrainBaganParams(Section):
    """BAGAN (Mariani et al. 2018): autoencoder, class-conditional latent Gaussians, then a K+1-way GAN."""

    latent_dim: int = Field(
        100, ge=2, le=1024, description="size of the latent code (encoder output, G input)"
    )
    g_base: int = Field(64, ge=4, le=512, description="generator width: channels of its last up block")
    d_base: int = Field(
        64, ge=4, le=512, description="encoder/discriminator width: channels of its first conv"
    )
    d_dropout: float = Field(
        0.3, ge=0, lt=1, description="dropout after every encoder/discriminator conv (BAGAN's code: 0.3)"
    )
    ae_epochs: int = Field(30, ge=1, description="autoencoder epochs over the training split")
    lr_ae: float = Field(1e-3, gt=0, le=1, description="Adam learning rate of the autoencoder")
    epochs: int = Field(100, ge=1, description="GAN epochs over the training split")
    lr_g: float = Field(5e-5, gt=0, le=1, description="Adam learning rate of the generator (BAGAN: 5e-5)")
    lr_d: float = Field(5e-5, gt=0, le=1, description="Adam learning rate of the discriminator (BAGAN: 5e-5)")
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of all three optimisers (BAGAN: 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 of all three optimisers")
    batch_size: int = Field(64, ge=2, le=4096, description="real images per step")
    class_sampling: Literal["uniform", "rebalance"] = Field(
        "uniform",
        description="classes of generated images: uniform, or rebalance (p_c = max(2/K - share_c, 0), "
        "renormalised: rare classes more often, so real + generated are balanced)",
    )
    init_discriminator_from_encoder: bool = Field(
        True, description="start D's conv trunk from the trained encoder's (BAGAN) instead of at random"
    )
    cov_ridge: float = Field(
        1e-3,
        gt=0,
        le=1,
        description="added to each class covariance's diagonal, times its mean variance: keeps it "
        "positive definite when a class has fewer images than latent_dim",
    )
    grid_per_class: int = Field(8, ge=1, le=64, description="fixed latents per class in the sample grids")
    log_every: int = Field(1, ge=1, description="log step metrics (means over the window) every N steps")
    checkpoint_every: int = Field(500, ge=1, description="save a resumable checkpoint every N steps")
    seed: int = Field(0, ge=0, description="seed of initialisation, batch order and latent draws")
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto: bf16 autocast on CUDA, the faster of fp32/bf16 layouts on CPU"
    )


class TrainEmbedderParams(Section):
    """The metric-learning network whose embeddings condition the OpenGAN-style generator."""

    device: str = Field("auto", description="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="see runtime.pick_precision")
    embed_dim: int = Field(128, ge=8, le=1024, description="size of the L2-normalised embedding")
    base_width: int = Field(
        32, ge=4, le=256, description="channels of the first conv stage (doubled per stage)"
    )
    epochs: int = Field(30, ge=1, le=10_000, description="passes of `steps_per_epoch` batches")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="batches per epoch; null = training images // batch_size"
    )
    batch_size: int = Field(128, ge=8, le=4096, description="images per batch (two augmented views each)")
    lr: float = Field(1e-3, gt=0, le=1, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW decoupled weight decay")
    temperature: float = Field(0.1, gt=0, le=1, description="supervised-contrastive softmax temperature")
    balanced: bool = Field(True, description="class-balanced batches (every class equally likely)")
    augment: bool = Field(True, description="random shift + contrast/brightness jitter on both views")
    knn_k: int = Field(5, ge=1, le=100, description="neighbours of the val k-NN vote against train")
    exclude_classes: list[str] = Field(
        default_factory=list,
        description="classes left out of embedder AND GAN training (the open-set experiment)",
    )
    checkpoint_every: int = Field(200, ge=1, description="steps between resumable checkpoints")
    seed: int = Field(0, ge=0, description="seed of init, batches and augmentation")


class TrainOpenganParams(Section):
    """Generator conditioned on frozen embeddings through conditional batch norm; projection D."""

    device: str = Field("auto", description="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="see runtime.pick_precision")
    latent_dim: int = Field(100, ge=1, le=1024, description="size of the noise vector z")
    g_base_width: int = Field(64, ge=4, le=512, description="generator channels at the last up stage")
    d_base_width: int = Field(64, ge=4, le=512, description="discriminator channels at the first stage")
    epochs: int = Field(50, ge=1, le=10_000, description="passes of `steps_per_epoch` batches")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="batches per epoch; null = training images // batch_size"
    )
    batch_size: int = Field(64, ge=2, le=4096, description="real (and fake) images per step")
    generator: Literal["residual", "dcgan"] = Field(
        "residual",
        description="residual: the published NewGAN generator (residual up-blocks, conditional BN, spectral "
        "norm, self-attention); dcgan: the transposed-conv stack with conditional BN (gans/opengan/nets.py)",
    )
    lr_g: float = Field(1e-4, gt=0, le=1, description="generator Adam learning rate (reference: 1e-4)")
    lr_d: float = Field(1e-4, gt=0, le=1, description="discriminator Adam learning rate (reference: 1e-4)")
    beta1: float = Field(0.0, ge=0, lt=1, description="Adam beta1 (reference: 0; DCGAN: 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2")
    loss: Literal["hinge", "nonsaturating"] = Field("hinge", description="adversarial loss")
    spectral_norm: bool = Field(True, description="spectral norm in D (replaces D's batch norm)")
    projection: bool = Field(
        True,
        description="D adds the projection term <V e, phi(x)> (image-embedding agreement); false: D is "
        "unconditional and only the consistency term ties G(z, e) to e",
    )
    consistency: Literal["mse", "cosine"] = Field(
        "mse",
        description="G's consistency term: mse = mean (f(G(z, e)) - e)^2 (reference) | cosine = 1 - cos",
    )
    consistency_weight: float = Field(
        0.01,
        ge=0,
        le=100,
        description="weight of the consistency term in G's loss (reference: 0.01); 0 = off",
    )
    balanced: bool = Field(True, description="class-balanced real batches (rare classes seen as often)")
    conditioning: Literal["exemplars", "gaussian"] = Field(
        "exemplars",
        description="at sampling, e = embedding of a random real training image of the class, or a draw "
        "from a Gaussian fitted to the class's embeddings (projected back onto the unit sphere)",
    )
    score_temperature: float = Field(
        0.1, gt=0, le=10, description="softmax temperature of the nearest-prototype agreement in the score"
    )
    grid_per_class: int = Field(8, ge=1, le=64, description="samples per class in the per-epoch grids")
    checkpoint_every: int = Field(200, ge=1, description="steps between resumable checkpoints")
    seed: int = Field(0, ge=0, description="seed of init, batches and noise")


class SynthesisFilterParams(Section):
    threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="keep a candidate only if its score (the model's confidence that it "
        "shows the intended class) is >= this",
    )
    unfiltered: list[Literal["bagan", "opengan"]] = Field(
        default_factory=lambda: ["opengan"],
        description="GANs whose candidates are all kept (scores recorded, not thresholded): the published "
        "OpenGAN samples unfiltered, and its score, calibrated on trained classes, cannot vouch for an "
        "unseen class drawn from exemplars",
    )
    max_tries_factor: float = Field(
        20.0, ge=1, description="cap on candidates drawn per class, as a multiple of the images wanted"
    )
    drop_near_copies: bool = Field(
        False,
        description="reject candidates that nearly copy a real training image (pixels; see copy_threshold)",
    )
    copy_threshold: float = Field(
        0.5,
        gt=0,
        le=2,
        description="near-copy: the candidate's nearest real training image is closer (pixel RMSE) than this "
        "x the median distance of a real training image to its nearest other real training image",
    )

    def threshold_for(self, gan: str) -> float:
        """The score a candidate of this GAN must reach: 0 (every candidate) if the GAN is unfiltered."""
        return 0.0 if gan in self.unfiltered else self.threshold


class SynthesizeParams(Section):
    n_per_class: list[int] = Field(
        default_factory=lambda: [1000, 3000],
        min_length=1,
        description="synthetic images per class of each augmented variant; the largest is generated",
    )
    filter: SynthesisFilterParams = Field(default_factory=SynthesisFilterParams)
    batch_size: int = Field(256, ge=1, le=65536, description="candidates drawn per generator call")
    seed: int = Field(0, ge=0, description="seed of the candidate draws (per class streams derive from it)")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="see runtime.pick_precision")

    @field_validator("n_per_class")
    @classmethod
    def _sorted_distinct_positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"every count must be a positive integer (got {v})")
        if v != sorted(set(v)):
            raise ValueError(f"counts must be distinct and in increasing order (got {v})")
        return v


class ReportParams(Section):
    n_bootstrap: int = Field(
        2000, ge=100, le=100_000, description="patient-level resamples of the paired comparison vs baseline"
    )
    seed: int = Field(0, ge=0, description="seed of the paired bootstrap")
    grid_images: int = Field(
        8, ge=1, le=32, description="images per class and source in the real vs synthetic figure"
    )


class AugmentParams(Section):
    """Classic transforms of `standard_aug_<n>` (data/augment.py): small affine, brightness, contrast."""

    rotation_deg: float = Field(10.0, ge=0, le=45, description="rotation drawn in [-r, r] degrees")
    translate: float = Field(0.06, ge=0, le=0.3, description="shift drawn in [-t, t] x side, each axis")
    scale: float = Field(0.10, ge=0, lt=1, description="zoom drawn in [1 - s, 1 + s]")
    brightness: float = Field(0.10, ge=0, le=0.5, description="offset in [-b, b] of the [0, 1] range")
    contrast: float = Field(0.10, ge=0, lt=1, description="factor in [1 - c, 1 + c] about the image mean")
    hflip_probability: float = Field(
        0.0, ge=0, le=1, description="left-right flips; off by default (a chest X-ray has a side)"
    )


class ClassifyParams(Section):
    """VGG16 per variant (classify.py): training, early stopping on val macro AUC, test once."""

    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1, description="one full training per seed"
    )
    epochs: int = Field(40, ge=1, le=1000, description="most epochs (passes over the training set)")
    patience: int = Field(8, ge=1, description="stop after this many epochs without a better val macro AUC")
    batch_size: int = Field(64, ge=2, le=4096, description="training batch")
    eval_batch_size: int = Field(512, ge=1, description="batch for val/test predictions")
    lr: float = Field(3e-4, gt=0, le=1, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, le=1, description="AdamW decoupled weight decay")
    head: Literal["pooled", "classic"] = Field(
        "pooled", description="pooled: GAP -> 256 -> K; classic: VGG's 4096-4096 on the flattened 2x2 map"
    )
    width: float = Field(1.0, gt=0, le=4, description="channel multiplier (1 = VGG16; the demo runs 1/16)")
    norm: Literal["batch", "none"] = Field("batch", description="batch norm after each conv (vgg16_bn)")
    dropout: float = Field(0.5, ge=0, lt=1, description="dropout before the head's linear layers")
    weights_path: str | None = Field(
        None, description="local torchvision vgg16(_bn) ImageNet state_dict; null = from scratch"
    )
    augment: AugmentParams = Field(default_factory=AugmentParams)
    bootstrap: int = Field(2000, ge=100, le=100_000, description="patient-level bootstrap resamples")
    ci_level: float = Field(0.95, gt=0.5, lt=1, description="confidence level of the intervals")
    device: str = Field("auto", description="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="auto measures on CPU")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers (got {v})")
        return v


class CasParams(Section):
    """Classification accuracy score: a classifier trained on synthetic images only (classify's settings
    with these overrides), early-stopped on the real val split, tested on the real test split."""

    enabled: bool = Field(True, description="train the synthetic-only classifier (the stage's slowest part)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="one training per seed")
    epochs: int | None = Field(None, ge=1, le=1000, description="most epochs; null = classify.epochs")
    patience: int | None = Field(None, ge=1, description="early-stopping patience; null = classify.patience")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers (got {v})")
        return v


GAN_EXTRACTORS = ("embedder", "classifier")


class GanMetricsParams(Section):
    """gan_metrics@<gan> (stages/gan_metrics.py): fidelity (FD, KID, precision/recall), classification
    accuracy score and memorisation audit of one GAN's synthetic images against the REAL TRAINING split."""

    extractors: list[Literal["embedder", "classifier"]] = Field(
        default_factory=lambda: list(GAN_EXTRACTORS),
        min_length=1,
        description="domain feature spaces: embedder = models/embedder.pt, classifier = the penultimate "
        "layer of models/classifier/baseline.pt; the first is also the memorisation audit's feature space",
    )
    inception_weights: str | None = Field(
        None,
        description="local torch-fidelity Inception-v3 weights (.pth) for fid_inception etc.; null = no "
        "Inception figures (nothing is ever downloaded)",
    )
    synthetic_per_class: int | None = Field(
        None, ge=1, description="the first n accepted synthetic images per class; null = every one written"
    )
    min_images: int = Field(
        10,
        ge=2,
        description="a comparison (overall or one class) with fewer images on either side is skipped",
    )
    kid_subsets: int = Field(100, ge=1, le=10_000, description="random subsets KID averages over")
    kid_subset_size: int = Field(
        1000, ge=2, description="KID subset size, at most: smaller sets use min(n_synthetic, n_real)"
    )
    pr_neighbourhood: int = Field(
        3, ge=1, le=100, description="k of the k-NN radii of precision and recall (Kynkaanniemi et al. 2019)"
    )
    copy_threshold: float = Field(
        0.5,
        gt=0,
        le=2,
        description="near-copy: nearest real training image closer than this x the median nearest-neighbour "
        "distance among the real training images themselves (in the same space: pixels or features)",
    )
    audit_pairs: int = Field(16, ge=1, le=128, description="closest synthetic/real pairs shown in MLflow")
    cas: CasParams = Field(default_factory=CasParams)
    batch_size: int = Field(256, ge=1, le=65536, description="images per feature-extraction batch")
    seed: int = Field(0, ge=0, description="seed of the KID subsets")
    device: str = Field("auto", description="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="of the CAS classifier's training; features are always computed in fp32"
    )

    @field_validator("extractors")
    @classmethod
    def _distinct_extractors(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"extractors must be distinct (got {v})")
        return v

    @model_validator(mode="after")
    def _enough_for_neighbourhoods(self) -> GanMetricsParams:
        if self.min_images <= self.pr_neighbourhood:
            raise ValueError(
                f"min_images ({self.min_images}) must exceed pr_neighbourhood ({self.pr_neighbourhood}): "
                "precision/recall need k other images around each one"
            )
        return self


class LogUniformRange(Section):
    """A search range sampled log-uniformly (learning rates): both bounds > 0, low < high."""

    low: float = Field(gt=0, le=1, description="smallest value tried (> 0: the scale is logarithmic)")
    high: float = Field(gt=0, le=1, description="largest value tried")

    @model_validator(mode="after")
    def _ordered(self) -> LogUniformRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high (got {self.low:g} .. {self.high:g})")
        return self


class IntStepRange(Section):
    """An ordinal integer range low, low + step, ..., high (TPE models it on the number line)."""

    low: int = Field(ge=0, description="smallest value tried (0 allowed)")
    high: int = Field(ge=1, le=1_000_000, description="largest value tried")
    step: int = Field(1, ge=1, description="spacing of the values tried")

    @model_validator(mode="after")
    def _ordered(self) -> IntStepRange:
        if not self.low < self.high:
            raise ValueError(f"low must be < high (got {self.low} .. {self.high})")
        if (self.high - self.low) % self.step:
            raise ValueError(
                f"high - low must be a multiple of step (got {self.low}..{self.high} by {self.step})"
            )
        return self


class TuneSearchSpace(Section):
    """What an Optuna trial chooses (README "Tuning")."""

    lr_g: LogUniformRange = Field(
        default_factory=lambda: LogUniformRange(low=1e-5, high=1e-3),
        description="generator Adam learning rate, log-uniform",
    )
    lr_d: LogUniformRange = Field(
        default_factory=lambda: LogUniformRange(low=1e-5, high=1e-3),
        description="discriminator Adam learning rate, log-uniform",
    )
    lr_ae: LogUniformRange = Field(
        default_factory=lambda: LogUniformRange(low=1e-4, high=1e-2),
        description="BAGAN only: autoencoder Adam learning rate, log-uniform",
    )
    n_per_class: IntStepRange = Field(
        default_factory=lambda: IntStepRange(low=0, high=3000, step=500),
        description="synthetic images added per class (0 = real images only), an ordinal integer range",
    )


class TunePrunerParams(Section):
    """Optuna's MedianPruner: stop a trial whose intermediate value is below the median of earlier trials'
    values at the same step."""

    enabled: bool = Field(True, description="false: every trial runs to the end")
    n_startup_trials: int = Field(3, ge=0, le=1000, description="finished trials before any pruning")
    n_warmup_steps: int = Field(1, ge=0, description="steps of a trial that are never pruned")
    interval_steps: int = Field(1, ge=1, description="check every this many steps")


# The sections a trial trains with; tune.overrides may change any of their keys (the short schedule).
TRIAL_SECTIONS = ("train_bagan", "train_embedder", "train_opengan", "synthesize", "classify")


class TuneParams(Section):
    """`cxraug tune`: Optuna over a GAN's learning rates and the synthetic images per class (tune.py)."""

    seed: int = Field(0, ge=0, description="seed of the TPE sampler (per trial: seed and trial number)")
    n_startup_trials: int = Field(
        5, ge=0, le=1000, description="TPE: trials drawn at random before the model-based ones"
    )
    search: TuneSearchSpace = Field(default_factory=TuneSearchSpace)
    pruner: TunePrunerParams = Field(default_factory=TunePrunerParams)
    probe_per_class: int = Field(
        32,
        ge=0,
        le=4096,
        description="unfiltered candidates per class behind the per-GAN-epoch probe (0 = no probe: "
        "intermediate values only from the classifier's epochs)",
    )
    max_failures_in_a_row: int = Field(
        3, ge=1, description="a worker stops after this many consecutive failed trials"
    )
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="partial sections (train_bagan, train_embedder, train_opengan, synthesize, classify) "
        "put over params.yaml for every trial: the short schedule",
    )

    @field_validator("overrides")
    @classmethod
    def _valid_overrides(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        models = {name: Params.model_fields[name].annotation for name in TRIAL_SECTIONS}
        problems = []
        for section, keys in v.items():
            if section not in models:
                problems.append(f"{section}: not a section trials use (one of {', '.join(TRIAL_SECTIONS)})")
                continue
            try:  # every key is validated where the section declares it (the rest take defaults here)
                models[section].model_validate(keys or {})
            except ValidationError as e:
                problems += [f"{section}.{_describe(err)}" for err in e.errors()]
        if problems:
            raise ValueError("; ".join(problems))
        return v


class Params(Section):
    """The whole params.yaml; a missing section takes its defaults."""

    prepare: PrepareParams = Field(default_factory=PrepareParams)
    train_bagan: TrainBaganParams = Field(default_factory=TrainBaganParams)
    train_embedder: TrainEmbedderParams = Field(default_factory=TrainEmbedderParams)
    train_opengan: TrainOpenganParams = Field(default_factory=TrainOpenganParams)
    synthesize: SynthesizeParams = Field(default_factory=SynthesizeParams)
    report: ReportParams = Field(default_factory=ReportParams)
    synthesize: SynthesizeParams = Field(default_factory=SynthesizeParams)
    classify: ClassifyParams = Field(default_factory=ClassifyParams)
    gan_metrics: GanMetricsParams = Field(default_factory=GanMetricsParams)
    tune: TuneParams = Field(default_factory=TuneParams)


def _describe(error: dict) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling against the documented params)"
    elif "input" in error and error["type"] not in ("missing",) and not isinstance(error["input"], dict):
        message += f" (got {error['input']!r})" if "(got" not in message else ""
    return f"{key}: {message}"


def parse_params(raw: dict, source: str = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise CxraugError(f"{source}: " + "; ".join(_describe(err) for err in e.errors())) from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise CxraugError(f"{path}: no such params file (run from the repository root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise CxraugError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise CxraugError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def merge(base: dict, overlay: dict) -> dict:
    """Nested update: keys of `overlay` replace those of `base`, sections are merged key by key."""
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = (
            merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def load_params(path: str | Path = "params.yaml", *overlays: str | Path) -> Params:
    """Read and validate params.yaml (then each overlay file on top); every problem is a one-line
    CxraugError naming the key."""
    raw = _read_yaml(Path(path))
    for overlay in overlays:
        raw = merge(raw, _read_yaml(Path(overlay)))
    return parse_params(raw, " + ".join(map(str, [path, *overlays])))


def trial_params(params: Params) -> Params:
    """The settings an Optuna trial trains with: params.yaml with `tune.overrides` on top."""
    return parse_params(merge(params.model_dump(mode="json"), params.tune.overrides), "tune.overrides")


def dump_params(params: Params) -> str:
    return yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
