"""CPU seconds per train_opengan step (D then G with the consistency term) of both generators at the
same width (not collected by pytest). One thread: the process's CPU time is what a step costs whatever
else shares the cores, so the figure holds on a loaded machine.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.opengan_step_rate --width 16 --batch 32 --steps 30
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cxraug.core.config import TrainOpenganParams
from cxraug.core.runtime import pick_precision
from cxraug.core.training import adam
from cxraug.gans.opengan.architectures import build_nets
from cxraug.gans.opengan.embedder import Embedder
from cxraug.gans.opengan.train import gan_step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=16, help="g_base = d_base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=30, help="timed steps, after 3 warm-up steps")
    args = ap.parse_args()
    torch.manual_seed(0)
    cpu = torch.device("cpu")
    embedder = Embedder(image_size=args.size, embed_dim=64, d_base=16).eval().requires_grad_(False)
    precision = pick_precision(cpu, "fp32")
    for name in ("dcgan", "residual"):
        p = TrainOpenganParams(
            generator=name, g_base=args.width, d_base=args.width, batch_size=args.batch, device="cpu"
        )
        g, d = build_nets(p, args.size, 64)
        opt_g = adam(g.parameters(), cpu, p.lr_g, (p.beta1, p.beta2))
        opt_d = adam(d.parameters(), cpu, p.lr_d, (p.beta1, p.beta2))
        real = torch.rand(args.batch, 1, args.size, args.size) * 2 - 1
        e = F.normalize(torch.randn(args.batch, 64), dim=1)
        for i in range(args.steps + 3):
            if i == 3:
                cpu0, wall0 = time.process_time(), time.perf_counter()
            gan_step(
                g, d, embedder, opt_g, opt_d, real, e, torch.randn(args.batch, p.latent_dim), p, precision
            )
        cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
        print(
            f"{name}: width {args.width}, batch {args.batch}, {args.size} px: "
            f"{cpu_s / args.steps:.3f} CPU s per step ({args.steps / cpu_s:.2f} steps per CPU second; "
            f"{args.steps / wall_s:.2f} per wall second here)"
        )


if __name__ == "__main__":
    main()
