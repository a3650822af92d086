"""The metric-learning network whose embeddings condition the OpenGAN-style generator.

A small CNN maps an image to an L2-normalised `embed_dim` vector. It is trained with the supervised
contrastive loss (Khosla et al. 2020, "L_out"); see `supervised_contrastive_loss` for why that loss.
After the `train_embedder` stage it is frozen: it conditions G, judges G's samples and later serves as a
feature extractor for Frechet distances.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cxraug.core.distributed import SINGLE, Context, GatherRows, Shard
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import Precision, atomic_save, safe_load
from cxraug.data.datasets import to_model_range
from cxraug.nets.blocks import discriminator_widths

FORMAT = "cxraug.embedder/1"


def _conv_bn_relu(cin: int, cout: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Embedder(nn.Module):
    """float [B, 1, H, W] in [-1, 1] -> unit vectors [B, embed_dim].

    VGG-like: per stage a stride-2 3x3 conv then a 3x3 conv (full size down to 4x4), global average
    pool, a two-layer head. The output is normalised because the loss compares cosine similarities."""

    def __init__(self, image_size: int, embed_dim: int = 128, d_base: int = 32) -> None:
        super().__init__()
        self.config = {"image_size": image_size, "embed_dim": embed_dim, "d_base": d_base}
        widths = discriminator_widths(image_size, d_base)
        layers: list[nn.Module] = []
        for cin, cout in zip([1, *widths[:-1]], widths, strict=True):
            layers += _conv_bn_relu(cin, cout, 2) + _conv_bn_relu(cout, cout, 1)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(widths[-1], widths[-1]), nn.ReLU(inplace=True), nn.Linear(widths[-1], embed_dim)
        )

    @property
    def embed_dim(self) -> int:
        return self.config["embed_dim"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(x)).float(), dim=1)


def supervised_contrastive_loss(
    z: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    anchors: slice = slice(None),
    total: int | None = None,
) -> torch.Tensor:
    """Supervised contrastive loss on unit vectors z [N, D]: for each anchor, the mean over its positives
    (same label, itself excluded) of -log softmax of their similarity among all other samples.

    Why this loss: every same-class pair in a batch is a positive and every other pair a negative, so
    there is no mining rule or margin to tune (triplet loss needs both); with class-balanced batches each
    of the 5 classes has many positives per batch. Unlike proxy losses it learns no per-class parameter,
    so the metric is not tied to the training classes (what open-set conditioning needs).

    `anchors` (rows of z) and `total` split the mean over processes: a rank sums the terms of its own
    anchors, against every sample, and divides by the number of anchors with a positive in the whole
    batch (default: the mean over `anchors`)."""
    n = len(z)
    rows = torch.arange(n, device=z.device)[anchors]
    self_mask = rows[:, None] == torch.arange(n, device=z.device)[None, :]
    logits = (z[anchors] @ z.T / temperature).masked_fill(self_mask, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    positives = (labels[anchors][:, None] == labels[None, :]) & ~self_mask
    n_pos = positives.sum(1)
    has_pos = n_pos > 0  # an anchor alone of its class in the batch has nothing to pull towards
    per_anchor = log_prob.masked_fill(~positives, 0.0).sum(1)[has_pos] / n_pos[has_pos]
    if total is None:
        return -per_anchor.mean()
    return -per_anchor.sum() / max(total, 1)


def anchors_with_positives(labels: torch.Tensor) -> int:
    """Anchors of the supervised contrastive loss that have a positive: those whose class occurs twice."""
    counts = torch.bincount(labels)
    return int(counts[counts > 1].sum())


def draw_augment(n: int, generator: torch.Generator) -> torch.Tensor:
    """Random parameters [n, 5] of `augment` (drawn for a whole batch, so every rank draws the same)."""
    return torch.rand(n, 5, generator=generator)


def apply_augment(x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Shift up to 1/8 of the side, scale 0.9-1.1, contrast 0.8-1.2, brightness +-0.1, from r [B, 5]."""
    b = len(x)
    r = r.to(x.device)
    scale = 0.9 + 0.2 * r[:, 0]
    theta = torch.zeros(b, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = (r[:, 1:3] - 0.5) * 0.25
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    view = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast, brightness = 0.8 + 0.4 * r[:, 3], (r[:, 4] - 0.5) * 0.2
    return (view * contrast[:, None, None, None] + brightness[:, None, None, None]).clamp(-1, 1)


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One random view per image: shift up to 1/8 of the side, scale 0.9-1.1, contrast 0.8-1.2 and
    brightness +-0.1. No flips: left and right matter on a chest film (heart, effusion side)."""
    return apply_augment(x, draw_augment(len(x), generator))


def embedder_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    use_augment: bool,
    generator: torch.Generator,
    precision: Precision,
    ctx: Context = SINGLE,
) -> torch.Tensor:
    """One optimizer step on a global batch of uint8 images: two views each, supervised contrastive loss.
    Under torchrun each rank embeds its shard of the views (augmentations drawn for the whole batch), the
    embeddings are gathered (with gradients) so that every anchor meets every sample of the global batch."""
    rows = ctx.shard.rows(len(images))
    x = to_model_range(images[rows])
    if use_augment:
        r1, r2 = draw_augment(len(images), generator), draw_augment(len(images), generator)
        views = torch.cat([apply_augment(x, r1[rows]), apply_augment(x, r2[rows])])
    else:
        views = torch.cat([x, x])
    with precision.autocast():
        z = model(precision.batch(views))
    mine = torch.cat([labels[rows], labels[rows]])
    if ctx.distributed:  # everyone's views, in rank order; this rank's anchors are its own block
        sizes = [2 * n for n in ctx.shard.sizes(len(images))]
        start = sum(sizes[: ctx.rank])
        z = GatherRows.apply(z, sizes)
        everyone = torch.cat([torch.cat([labels[r], labels[r]]) for r in _all_rows(ctx, len(images))])
        total = anchors_with_positives(torch.cat([labels, labels]))
        loss = ctx.world_size * supervised_contrastive_loss(
            z, everyone, temperature, slice(start, start + len(mine)), total
        )
    else:
        loss = supervised_contrastive_loss(z, mine, temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _all_rows(ctx: Context, n: int) -> list[slice]:
    return [Shard(r, ctx.world_size).rows(n) for r in range(ctx.world_size)]


@torch.no_grad()
def embed(model: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Embeddings [N, D] (float32, on the model's device) of uint8 images [N, H, W], in eval mode."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = [
        model(to_model_range(images[i : i + batch_size].to(device)))
        for i in range(0, len(images), batch_size)
    ]
    model.train(was_training)
    if not out:
        return torch.empty(0, model.config["embed_dim"], device=device)
    return torch.cat(out).float()


@dataclass(frozen=True)
class Retrieval:
    """Val queries against the train embeddings (cosine similarity)."""

    knn_accuracy: float  # similarity-weighted vote of the k nearest train images
    knn_balanced_accuracy: float  # mean over classes of the per-class k-NN recall
    recall_at_1: float  # the nearest train image has the query's class
    majority_rate: float  # accuracy of always answering the most frequent val class (chance level)
    per_class_recall: dict[str, float]

    def as_metrics(self, prefix: str = "val_") -> dict[str, float]:
        scalars = {
            "knn_accuracy": self.knn_accuracy,
            "knn_balanced_accuracy": self.knn_balanced_accuracy,
            "recall_at_1": self.recall_at_1,
        }
        return {f"{prefix}{k}": v for k, v in scalars.items()}


def retrieval(
    train_emb: torch.Tensor,
    train_labels: torch.Tensor,
    query_emb: torch.Tensor,
    query_labels: torch.Tensor,
    k: int,
    classes: tuple[str, ...],
) -> Retrieval:
    train_labels, query_labels = train_labels.to(train_emb.device), query_labels.to(train_emb.device)
    k = min(k, len(train_emb))
    # queries in chunks: on the full NIH data the whole similarity matrix would take gigabytes
    tops = [(q @ train_emb.T).topk(k, dim=1) for q in query_emb.split(1024)]
    values, indices = torch.cat([t.values for t in tops]), torch.cat([t.indices for t in tops])
    votes = torch.zeros(len(query_emb), len(classes), device=train_emb.device)
    votes.scatter_add_(1, train_labels[indices], values.clamp(min=0) + 1e-6)
    correct = votes.argmax(1) == query_labels
    present = [c for c in range(len(classes)) if (query_labels == c).any()]
    per_class = {classes[c]: correct[query_labels == c].float().mean().item() for c in present}
    counts = torch.bincount(query_labels, minlength=len(classes))
    return Retrieval(
        knn_accuracy=correct.float().mean().item(),
        knn_balanced_accuracy=sum(per_class.values()) / max(1, len(per_class)),
        recall_at_1=(train_labels[indices[:, 0]] == query_labels).float().mean().item(),
        majority_rate=(counts.max() / counts.sum()).item(),
        per_class_recall=per_class,
    )


# -------------------------------------------------------------------------------------- save and load


def save_embedder(model: Embedder, path: Path, classes: tuple[str, ...], trained_classes: list[str]) -> None:
    state = {
        "format": FORMAT,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "trained_classes": list(trained_classes),
    }
    atomic_save(state, path)


def read_embedder_file(path: Path) -> dict:
    state = safe_load(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CxraugError(f"{path}: not an embedder written by `cxraug train-embedder`; rerun that stage")
    return state


def load_embedder(path: Path, device: torch.device | str) -> Embedder:
    """The frozen embedder: float [B, 1, H, W] in [-1, 1] -> unit vectors [B, embed_dim]; eval mode."""
    state = read_embedder_file(Path(path))
    model = Embedder(**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.to(device).eval().requires_grad_(False)
