"""NCCL check for scripts/gpu_check.sh: under `torchrun --nproc_per_node 2` on 2 GPUs, one DDP step of a
small conv net through cxraug.core.distributed; every rank must end with the same weights, and the all-reduced
mean of the ranks' ids must be 0.5. Prints one line per rank; exits non-zero on a mismatch."""

from __future__ import annotations

import torch
from torch import nn

from cxraug.core import distributed


def main() -> None:
    ctx = distributed.setup(torch.device("cuda"))
    device = distributed.rank_device(torch.device("cuda"), ctx)
    torch.manual_seed(0)
    net = ctx.wrap(
        ctx.sync_batchnorm(
            nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 14 * 14, 2)).to(
                device
            )
        )
    )
    opt = torch.optim.Adam(net.parameters())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 1, 16, 16, generator=g), torch.randint(0, 2, (16,), generator=g)
    rows = ctx.shard.rows(16)
    loss = nn.functional.cross_entropy(net(x[rows].to(device)), y[rows].to(device))
    loss.backward()
    opt.step()
    flat = torch.cat([p.detach().flatten() for p in net.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(ctx.world_size)]
    torch.distributed.all_gather(gathered, flat)
    same = all(torch.equal(gathered[0], t) for t in gathered)
    mean_rank = ctx.mean(torch.tensor(float(ctx.rank), device=device)).item()
    print(
        f"rank {ctx.rank}/{ctx.world_size} on {torch.cuda.get_device_name(device)}: weights equal {same}, "
        f"mean rank {mean_rank}",
        flush=True,
    )
    distributed.cleanup()
    if not same or abs(mean_rank - 0.5) > 1e-6:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
