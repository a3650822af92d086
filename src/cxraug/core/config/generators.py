"""Settings of the generators' training stages and of `synthesize`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from cxraug.core.config.section import Section


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
    lr_g: float = Field(
        5e-6,
        gt=0,
        le=1,
        description="Adam learning rate of the generator (BAGAN: 5e-5; 5e-6 measured to keep every class's "
        "variety, the rare one included, at every replicate seed: docs/bagan.md)",
    )
    lr_d: float = Field(
        5e-4,
        gt=0,
        le=1,
        description="Adam learning rate of the discriminator (BAGAN: 5e-5; 10x measured to keep G on the "
        "image manifold, docs/bagan.md)",
    )
    beta1: float = Field(0.5, ge=0, lt=1, description="Adam beta1 of all three optimizers (BAGAN: 0.5)")
    beta2: float = Field(0.999, ge=0, lt=1, description="Adam beta2 of all three optimizers")
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
    cov_estimator: Literal["sample", "ledoit_wolf", "oas", "diagonal"] = Field(
        "sample",
        description="class covariance: sample (numpy), ledoit_wolf / oas (sklearn.covariance shrinkage), "
        "diagonal (per-dimension variances); see docs/bagan.md for what each measured on the digits",
    )
    d_class_weight: Literal["none", "balanced"] = Field(
        "balanced",
        description="D's cross-entropy: none (BAGAN), or balanced (real class c weighted mean(n)/n_c)",
    )
    grid_per_class: int = Field(8, ge=1, le=64, description="fixed latents per class in the sample grids")
    log_every: int = Field(10, ge=1, description="log step metrics (means over the window) every N steps")
    checkpoint_every: int = Field(1000, ge=1, description="save a resumable checkpoint every N steps")
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
    d_base: int = Field(32, ge=4, le=256, description="channels of the first conv stage (doubled per stage)")
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
    g_base: int = Field(64, ge=4, le=512, description="generator channels at the last up stage")
    d_base: int = Field(64, ge=4, le=512, description="discriminator channels at the first stage")
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
    d_steps: int = Field(
        1, ge=1, le=10, description="D updates per G update, each on its own batch (BigGAN/SNGAN: 2-5)"
    )
    ema_decay: float = Field(
        0.0, ge=0, lt=1, description="EMA of G's weights samples (warm-up as diffusion's); 0 = G itself"
    )
    mode_seeking_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="weight of MSGAN's mode-seeking term in G's loss (gans/opengan/losses.py); 0 = off "
        "(the reference). Half of each G batch is drawn again with a second z",
    )
    augment: list[Literal["translation", "cutout"]] = Field(
        default_factory=list,
        description="differentiable augmentation of every image D sees, real and fake (gans/diffaugment.py); "
        "[] = none (the reference)",
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


class GanFilterParams(Section):
    """One generator's filter rule (synthesis/filters.py)."""

    mode: Literal["argmax", "threshold", "none"] = Field(
        "threshold",
        description="argmax: the model's top class is the intended one (the paper's BAGAN rule); "
        "threshold: score >= threshold; none: keep every candidate",
    )
    threshold: float | None = Field(
        None, ge=0, le=1, description="mode threshold: the cut-off; null = synthesize.filter.threshold"
    )


class SynthesisFilterParams(Section):
    per_gan: dict[str, GanFilterParams] = Field(
        default_factory=lambda: {
            "bagan": GanFilterParams(mode="argmax"),
            "opengan": GanFilterParams(mode="none"),
            "diffusion": GanFilterParams(mode="none"),
        },
        description="the rule per generator; a generator not listed uses mode threshold",
    )
    threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="mode threshold: keep a candidate only if its score (the model's confidence that it "
        "shows the intended class) is >= this",
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


class SamplerParams(Section):
    """How a generator with a sampler (the diffusion model) samples at synthesis; null keeps the setting it
    was trained with (train_diffusion's, which also draws its MLflow grids). The GANs have no sampler and
    ignore it. Here rather than in train_diffusion so that changing it reruns synthesis only."""

    name: Literal["ddim", "dpm_solver"] | None = Field(None, description="ddim | dpm_solver | null")
    steps: int | None = Field(None, ge=1, le=1000, description="denoising steps per sample | null")
    guidance_scale: float | None = Field(
        None, ge=0, le=20, description="classifier-free guidance w (0 unconditional, 1 conditional) | null"
    )

    def changes(self) -> dict:
        """The settings this overrides, named as the diffusion proposer's `with_sampling` takes them."""
        named = {"sampler": self.name, "steps": self.steps, "guidance": self.guidance_scale}
        return {k: v for k, v in named.items() if v is not None}


class SynthesizeParams(Section):
    n_per_class: list[int] = Field(
        default_factory=lambda: [1000, 3000],
        min_length=1,
        description="synthetic images per class of each augmented variant; the largest is generated",
    )
    filter: SynthesisFilterParams = Field(default_factory=SynthesisFilterParams)
    sampler: SamplerParams = Field(default_factory=SamplerParams)
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


class TrainDiffusionParams(Section):
    """A class-conditional denoising diffusion model (DDPM training, DDIM / DPM-Solver++ sampling) with
    classifier-free guidance; diffusers' UNet2DModel with a class embedding (+ one null label)."""

    device: str = Field("auto", description="auto (cuda > mps > cpu) | cpu | cuda | cuda:N | mps")
    precision: Literal["auto", "bf16", "fp32"] = Field("auto", description="see runtime.pick_precision")
    resolution: int | None = Field(
        None,
        ge=8,
        le=1024,
        description="the denoiser's resolution; null = image_size. Lower: images are area-downsampled for "
        "training and samples bilinearly upsampled (the CPU demo's speed knob)",
    )
    widths: list[int] = Field(
        default_factory=lambda: [64, 128, 256],
        min_length=1,
        max_length=6,
        description="U-Net channels per level (4..1024 each); every level after the first halves the size",
    )
    layers_per_block: int = Field(2, ge=1, le=4, description="residual blocks per U-Net level")
    attention: bool = Field(True, description="self-attention in the U-Net's middle block")
    train_timesteps: int = Field(1000, ge=10, le=4000, description="steps of the DDPM noise schedule")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "squaredcos_cap_v2", description="DDPM noise schedule (squaredcos_cap_v2: the cosine schedule)"
    )
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "epsilon", description="what the U-Net regresses: the noise, or v = sqrt(a) noise - sqrt(1 - a) x0"
    )
    epochs: int = Field(100, ge=1, le=100_000, description="passes of `steps_per_epoch` batches")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="batches per epoch; null = training images // batch_size"
    )
    batch_size: int = Field(64, ge=2, le=4096, description="real images per step")
    lr: float = Field(2e-4, gt=0, le=1, description="AdamW learning rate (1e-4 .. 1e-3 usual)")
    weight_decay: float = Field(0.0, ge=0, le=1, description="AdamW decoupled weight decay")
    warmup_steps: int = Field(100, ge=0, description="linear learning-rate warm-up from 0")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="after the warm-up: constant, or cosine decay to 0 at the last step"
    )
    ema_decay: float = Field(
        0.999, ge=0, lt=1, description="EMA of the weights that samples (0.99 .. 0.9999; with warm-up)"
    )
    label_dropout: float = Field(
        0.1, ge=0, lt=1, description="p of training on the null label (classifier-free guidance: 0.1 .. 0.2)"
    )
    balanced: bool = Field(True, description="class-balanced batches (rare classes seen as often)")
    sampler: Literal["ddim", "dpm_solver"] = Field("ddim", description="ddim (eta 0) or dpm_solver (++ 2M)")
    sampler_steps: int = Field(50, ge=1, le=1000, description="denoising steps per sample (DDIM 20 .. 100)")
    guidance_scale: float = Field(
        2.0, ge=0, le=20, description="classifier-free guidance w: 0 unconditional, 1 conditional, 1..5 usual"
    )
    sample_batch_size: int = Field(256, ge=1, le=65536, description="images per sampler call")
    grid_per_class: int = Field(8, ge=1, le=64, description="samples per class in the per-epoch grids")
    log_every: int = Field(25, ge=1, description="log step losses every N steps")
    checkpoint_every: int = Field(500, ge=1, description="steps between resumable checkpoints")
    seed: int = Field(0, ge=0, description="seed of init, batches, noise and label dropout")

    @field_validator("widths")
    @classmethod
    def _widths(cls, v: list[int]) -> list[int]:
        if any(not 4 <= w <= 1024 for w in v):
            raise ValueError(f"every width must be within 4..1024 (got {v})")
        return v


class ReplicatesParams(Section):
    """The training runs behind every number (docs/classification.md "Replicates"): each generator (BAGAN;
    the embedder and OpenGAN together) is trained once per generator seed, synthesis runs per generator
    seed, and each GAN variant trains classify.seeds classifiers on every generator seed (a full cross)."""

    generator_seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="one training of every generator per seed (stages train_<gan>@<seed>, "
        "synthesize@<gan>-<seed>)",
    )

    @field_validator("generator_seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds must be distinct non-negative integers (got {v})")
        return v
