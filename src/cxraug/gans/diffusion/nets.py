"""The class-conditional denoiser (diffusers' UNet2DModel), its noise schedules, classifier-free guided
sampling and an exponential moving average of its weights.

Labels 0..K-1 are the classes; label K is the null label: training replaces a class label by it with
probability `label_dropout`, so one network is both the conditional and the unconditional model that
classifier-free guidance (Ho & Salimans 2022) mixes: eps = eps(x, null) + w * (eps(x, c) - eps(x, null)).
w = 0 is the unconditional model, w = 1 the conditional one, w > 1 pushes samples towards their class.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel
from torch import nn

from cxraug.core.training import EMA as EMA  # the denoiser's sampling weights (shared with NewGAN)

SAMPLERS = ("ddim", "dpm_solver")


@dataclass(frozen=True)
class Architecture:
    image_size: int  # of the stored images
    resolution: int  # the denoiser's own; images are area-downsampled to it and bilinearly upsampled back
    n_classes: int
    widths: tuple[int, ...]  # channels per U-Net level (each level after the first halves the resolution)
    layers_per_block: int
    attention: bool  # self-attention in the U-Net's middle block
    train_timesteps: int
    beta_schedule: str
    prediction_type: str = "epsilon"  # "epsilon" | "v_prediction" (models saved before it: epsilon)

    @property
    def null_label(self) -> int:
        return self.n_classes

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Architecture:
        return cls(**{**data, "widths": tuple(data["widths"])})


def build_unet(arch: Architecture) -> UNet2DModel:
    levels = len(arch.widths)
    if arch.resolution % 2 ** (levels - 1):
        raise ValueError(f"resolution {arch.resolution} is not divisible by 2^{levels - 1} ({levels} levels)")
    return UNet2DModel(
        sample_size=arch.resolution,
        in_channels=1,
        out_channels=1,
        block_out_channels=arch.widths,
        down_block_types=("DownBlock2D",) * levels,
        up_block_types=("UpBlock2D",) * levels,
        layers_per_block=arch.layers_per_block,
        add_attention=arch.attention,
        attention_head_dim=min(arch.widths[-1], 32),
        norm_num_groups=_groups(arch.widths),
        num_class_embeds=arch.n_classes + 1,  # + the null label
    )


def _groups(widths: tuple[int, ...]) -> int:
    """The most group-norm groups (up to 32, diffusers' default) that divide every width."""
    return next(g for g in (32, 16, 8, 4, 2, 1) if all(w % g == 0 for w in widths))


def _schedule(arch: Architecture) -> dict:
    return {
        "num_train_timesteps": arch.train_timesteps,
        "beta_schedule": arch.beta_schedule,
        "prediction_type": arch.prediction_type,
    }


def train_scheduler(arch: Architecture) -> DDPMScheduler:
    return DDPMScheduler(**_schedule(arch))


def training_target(schedule: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    """What the U-Net regresses at (x0, noise, t): the noise, or v (Salimans & Ho 2022)."""
    if schedule.config.prediction_type == "v_prediction":
        return schedule.get_velocity(x0, noise, t)
    return noise


def sampling_scheduler(arch: Architecture, sampler: str):
    """A fresh sampler (they keep per-run state) over the training noise schedule."""
    schedule = _schedule(arch)
    if sampler == "ddim":
        return DDIMScheduler(**schedule, clip_sample=True)
    if sampler == "dpm_solver":
        return DPMSolverMultistepScheduler(**schedule, algorithm_type="dpmsolver++", thresholding=False)
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")


def to_resolution(x: torch.Tensor, resolution: int) -> torch.Tensor:
    """[B, 1, S, S] -> [B, 1, r, r] by area averaging (identity when r = S)."""
    return x if x.shape[-1] == resolution else F.adaptive_avg_pool2d(x, resolution)


def to_image_size(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def guided_noise(
    unet: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, null: int, guidance: float
) -> torch.Tensor:
    """The guided prediction (noise or v: guidance mixes either linearly); one pass when w is 0 or 1, else
    the two branches in one batch."""
    if guidance == 0:
        return unet(x, t, class_labels=torch.full_like(labels, null)).sample
    if guidance == 1:
        return unet(x, t, class_labels=labels).sample
    both = unet(
        torch.cat([x, x]), torch.cat([t, t]), class_labels=torch.cat([labels, torch.full_like(labels, null)])
    ).sample
    conditional, unconditional = both.float().chunk(2)
    return unconditional + guidance * (conditional - unconditional)


@torch.no_grad()
def sample(
    unet: nn.Module,
    arch: Architecture,
    labels: torch.Tensor,
    noise: torch.Tensor,
    sampler: str,
    steps: int,
    guidance: float,
    autocast=None,
) -> torch.Tensor:
    """Images [B, 1, image_size, image_size] in [-1, 1] from initial noise [B, 1, r, r] (deterministic
    given the noise for DDIM with eta 0 and for DPM-Solver++)."""
    scheduler = sampling_scheduler(arch, sampler)
    scheduler.set_timesteps(steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        batch_t = t.expand(len(x)).to(noise.device)
        if autocast is None:
            eps = guided_noise(unet, model_input, batch_t, labels, arch.null_label, guidance)
        else:
            with autocast():
                eps = guided_noise(unet, model_input, batch_t, labels, arch.null_label, guidance)
        x = scheduler.step(eps.float(), t, x).prev_sample
    return to_image_size(x.clamp(-1, 1), arch.image_size)
