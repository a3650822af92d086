"""Settings of the classifier, the GAN metrics and the report."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from cxraug.core.config.data import AugmentParams
from cxraug.core.config.section import Section


class ReportParams(Section):
    n_bootstrap: int = Field(
        4000, ge=100, le=100_000, description="patient-level resamples of the paired comparison vs baseline"
    )
    adjust: Literal["holm", "fdr_bh"] = Field(
        "holm", description="multiplicity adjustment of each table's p-values: holm (FWER) | fdr_bh (FDR)"
    )
    seed: int = Field(0, ge=0, description="seed of the paired bootstrap")
    grid_images: int = Field(
        8, ge=1, le=32, description="images per class and source in the real vs synthetic figure"
    )


class ClassifyParams(Section):
    """VGG16 per variant (classify.py): training, early stopping on val macro AUC, test once."""

    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1, description="one full training per seed"
    )
    budget: Literal["steps", "epochs"] = Field(
        "steps",
        description="steps: every variant trains `steps` optimizer steps with val checked every "
        "`eval_every` (extra images do not buy extra training); epochs: `epochs` passes over the "
        "variant's training set",
    )
    steps: int = Field(4000, ge=1, le=10_000_000, description="most optimizer steps (budget: steps)")
    eval_every: int = Field(200, ge=1, description="optimizer steps between val checks (budget: steps)")
    epochs: int = Field(40, ge=1, le=1000, description="most epochs (budget: epochs)")
    patience: int = Field(
        8,
        ge=1,
        description="stop after this many val checks (epochs or eval_every steps) without a better "
        "val macro AUC",
    )
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


GAN_EXTRACTORS = ("random", "embedder", "classifier")
INDEPENDENT_EXTRACTORS = ("random", "inception")  # spaces no generator trains, conditions or filters with


class GanMetricsParams(Section):
    """gan_metrics@<gan> (stages/gan_metrics.py): fidelity (FD, KID, precision/recall), classification
    accuracy score and memorisation audit of one generator's images against the held-out REAL VAL split,
    beside the real-vs-real floor (train vs val)."""

    extractors: list[Literal["random", "embedder", "classifier"]] = Field(
        default_factory=lambda: list(GAN_EXTRACTORS),
        min_length=1,
        description="feature spaces: random = a fixed random conv net (no generator saw it), embedder = "
        "models/embedder.pt (OpenGAN's own), classifier = the penultimate layer of "
        "models/classifier/baseline.pt; the first is also the memorisation audit's feature space",
    )
    random_seed: int = Field(0, ge=0, description="seed of the random conv net's weights (its own)")
    draws: int = Field(
        5, ge=1, le=1000, description="subsamples of the larger side averaged at equal set sizes"
    )
    degenerate_spread: float = Field(
        1e-4,
        ge=0,
        lt=1,
        description="a space whose real features have trace(cov) / mean squared norm below this is "
        "degenerate: reported as such, never as a score",
    )
    cas_chance: float = Field(
        0.55,
        gt=0.5,
        lt=1,
        description="class-blind when the CAS macro AUC is below this or its CI reaches 0.5",
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
        description="near-copy: nearest real training image closer than this x the median distance of a "
        "real training image to its nearest real training image of another patient (same space: pixels or "
        "features)",
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
