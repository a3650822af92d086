"""Multi-process training under `torchrun`: gloo on CPU, NCCL on GPUs, one process per GPU (or CPU share).

The rules every training stage follows (so N processes compute what one process does with the same
global batch):

- `setup(device)` starts the process group from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR/PORT) and returns a `Context`; without torchrun it returns a one-process context and every
  helper below is a no-op.
- Every rank draws the SAME global batch (indices, latents, augmentation parameters) from the same seeded
  generators and keeps its contiguous share of the rows (`Shard.rows`). A loss averaged over the local rows
  is re-weighted by `Shard.scale` so that DistributedDataParallel's gradient average equals the gradient
  of the mean over the global batch, even when the shares differ by one image.
- Batch norm becomes synchronised batch norm (`Context.sync_batchnorm`): statistics over the global batch,
  as in one process. torch's SyncBatchNorm runs on GPUs only, so on CPU a small equivalent is used.
- DDP wraps a module only for the forward passes whose backward updates that module; evaluation, sampling
  and a discriminator pass that only carries gradients to the generator use the plain module.
- Rank 0 alone logs (MLflow), writes checkpoints and outputs, shows progress; metrics are averaged over
  ranks (`Context.mean`) before logging.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cxraug.core.errors import CxraugError


@dataclass(frozen=True)
class Shard:
    """This rank's contiguous share of every global batch (sizes differ by at most one)."""

    rank: int = 0
    world_size: int = 1

    def sizes(self, n: int) -> list[int]:
        base, extra = divmod(n, self.world_size)
        return [base + (r < extra) for r in range(self.world_size)]

    def rows(self, n: int) -> slice:
        sizes = self.sizes(n)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    def take(self, x: torch.Tensor) -> torch.Tensor:
        return x[self.rows(len(x))]

    def scale(self, loss: torch.Tensor, local: float, total: float) -> torch.Tensor:
        """A mean over `local` of the global batch's `total` (items, or summed weights) turned into this
        rank's term of the global mean: DDP then averages the ranks' gradients, so each term carries the
        world size. Exactly `loss` in one process."""
        if self.world_size == 1:  # the local rows are the whole batch: local == total
            return loss
        return loss * (local * self.world_size / total)


WHOLE = Shard()


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def shard(self) -> Shard:
        return Shard(self.rank, self.world_size)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. sets a stale checkpoint aside), then the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()

    def main_only(self, context: contextlib.AbstractContextManager) -> contextlib.AbstractContextManager:
        """`context` on rank 0 (an MLflow run, say); a context yielding None on the other ranks."""
        return context if self.is_main else contextlib.nullcontext()

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The average over ranks of per-rank metrics (one collective for a stacked vector)."""
        if not self.distributed:
            return values
        out = values.detach().float().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out / self.world_size

    def mean_dict(self, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.distributed:
            return metrics
        keys = list(metrics)
        averaged = self.mean(torch.stack([metrics[k].detach().float().reshape(()) for k in keys]))
        return dict(zip(keys, averaged.unbind(), strict=True))

    def gather_rows(self, local: torch.Tensor, n: int) -> torch.Tensor:
        """The global [n, ...] tensor from every rank's `Shard.rows(n)` (with gradients, see GatherRows)."""
        if not self.distributed:
            return local
        return GatherRows.apply(local, self.shard.sizes(n))

    def wrap(self, module: nn.Module) -> nn.Module:
        """DistributedDataParallel around `module` (no buffer broadcast: synchronised batch norm and
        identical spectral-norm iterations keep every rank's buffers equal)."""
        if not self.distributed:
            return module
        device = next(module.parameters()).device
        device_ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)

    def sync_batchnorm(self, module: nn.Module) -> nn.Module:
        """Batch norm layers with statistics over the global batch (a no-op in one process)."""
        if not self.distributed:
            return module
        if next(module.parameters()).device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return convert_cpu_sync_batchnorm(module)

    def decorrelate(self, seed: int) -> None:
        """Give each rank its own global RNG stream (dropout masks) once the nets are built alike;
        rank 0 keeps the stream one process would have."""
        if self.rank > 0:
            torch.manual_seed(int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0]))


SINGLE = Context()
_current: Context = SINGLE


def setup(device: torch.device | None = None) -> Context:
    """Join the process group torchrun describes (idempotent); one-process context without torchrun."""
    global _current
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    if dist.is_initialized():
        return _current
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    try:
        if cuda:
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo")
    except (RuntimeError, ValueError) as e:
        raise CxraugError(f"cannot join the torchrun process group ({e}); launch with `torchrun`") from None
    _current = Context(rank, world_size, local_rank)
    return _current


def current() -> Context:
    return _current


def rank_device(device: torch.device, ctx: Context) -> torch.device:
    """Under torchrun each process drives the GPU of its local rank."""
    if device.type == "cuda" and ctx.distributed:
        return torch.device("cuda", ctx.local_rank)
    return device


def cleanup() -> None:
    global _current
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _current = SINGLE


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (for passes that must not trigger gradient reduction)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def check_batch(batch_size: int, ctx: Context, key: str) -> None:
    if batch_size < ctx.world_size:
        raise CxraugError(
            f"{key}: the global batch ({batch_size}) must hold at least one image per process "
            f"({ctx.world_size}); raise it or start fewer processes"
        )


# ------------------------------------------------------------------------------ collectives with gradients


class GatherRows(torch.autograd.Function):
    """all_gather of row blocks of unequal size, differentiable: every rank gets the global tensor, and in
    backward each rank's block receives the sum over ranks of the gradients flowing into it."""

    @staticmethod
    def forward(ctx, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, dist.get_rank()
        padded = local.new_zeros((max(sizes), *local.shape[1:]))
        padded[: len(local)] = local
        blocks = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(blocks, padded.contiguous())
        return torch.cat([b[:n] for b, n in zip(blocks, sizes, strict=True)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def _all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(x.contiguous(), op=dist.ReduceOp.SUM)


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of the global batch, for the gloo backend (torch's
    SyncBatchNorm needs a GPU). Mean first, then the variance of the centred values (two all-reduces, no
    E[x^2] - E[x]^2 cancellation); gradients flow through the reductions. Same state dict as BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        x32 = x.float()
        count = torch.tensor([x32.numel() / x32.shape[1]], device=x.device)
        sums = _all_reduce_sum(torch.cat([x32.sum(dims), count]))
        n = sums[-1].detach()
        mean = sums[:-1] / n
        centred = x32 - mean.view(shape)
        var = _all_reduce_sum(centred.square().sum(dims)) / n
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * n / (n - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        return y.to(x.dtype)


def convert_cpu_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Every batch norm inside `module` as CpuSyncBatchNorm, sharing its parameters and buffers (an
    optimizer built on the old parameters keeps working)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        if module.track_running_stats:
            out.running_mean, out.running_var = module.running_mean, module.running_var
            out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
        return out
    for name, child in module.named_children():
        converted = convert_cpu_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module
