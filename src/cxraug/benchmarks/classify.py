"""Throughput of one VGG16 training step (forward, backward, fused AdamW) in each precision and layout,
with the pooled and the classic head: the figures behind classify's `precision: auto` and `head`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxraug.benchmarks.common import Measurement, measure
from cxraug.nets.vgg import build_vgg16
from cxraug.runtime import Precision, pick_device


def _train_step(precision: Precision, head: str, width: float, batch_size: int, image_size: int):
    torch.manual_seed(0)
    model = precision.module(build_vgg16(5, image_size=image_size, width=width, head=head))
    fused = precision.device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
    x = precision.batch(torch.rand(batch_size, 1, image_size, image_size) * 2 - 1)
    y = torch.randint(0, 5, (batch_size,), device=precision.device)

    def step() -> None:
        with precision.autocast():
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if precision.device.type == "cuda":
            torch.cuda.synchronize()

    return step


def bench_classify(
    width: float = 1.0, batch_size: int = 64, image_size: int = 64, device: str = "auto", repeats: int = 5
) -> list[Measurement]:
    """fp32 NCHW (reference), fp32 channels_last, bf16 channels_last (few repeats: slow on CPUs without
    native bf16), then the classic 4096-wide head in the fastest fp32 layout."""
    dev = pick_device(device)
    configs = [
        ("pooled head, fp32, NCHW", Precision(dev, bf16=False, channels_last=False), "pooled", repeats),
        (
            "pooled head, fp32, channels_last",
            Precision(dev, bf16=False, channels_last=True),
            "pooled",
            repeats,
        ),
        ("pooled head, bf16, channels_last", Precision(dev, bf16=True, channels_last=True), "pooled", 2),
        ("pooled head, bf16, NCHW", Precision(dev, bf16=True, channels_last=False), "pooled", 2),
    ]
    rows = [
        measure(
            f"{name} (width {width:g}, batch {batch_size}, {image_size} px, {dev.type})",
            _train_step(prec, head, width, batch_size, image_size),
            batch_size,
            warmup=1,
            repeats=n,
        )
        for name, prec, head, n in configs
    ]
    fastest_fp32 = configs[0][1] if rows[0].per_second >= rows[1].per_second else configs[1][1]
    layout = "channels_last" if fastest_fp32.channels_last else "NCHW"
    rows.append(
        measure(
            f"classic head, fp32, {layout}",
            _train_step(fastest_fp32, "classic", width, batch_size, image_size),
            batch_size,
            warmup=1,
            repeats=repeats,
        )
    )
    return rows
