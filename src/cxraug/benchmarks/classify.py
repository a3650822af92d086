"""Throughput of one VGG16 training step (forward, backward, fused AdamW) in each precision and layout,
with the pooled and the classic head: the figures behind classify's `precision: auto` and `head`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxraug.benchmarks.common import Measurement, measure
from cxraug.core.runtime import Precision, pick_device
from cxraug.nets.vgg import build_vgg16


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
    """fp32 NCHW (reference), fp32 channels_last, bf16 channels_last (what `precision: bf16` runs), then
    the classic 4096-wide head in the faster fp32 layout. On a CPU without native bf16 the bf16 step is so
    slow that it is timed once on a batch of at most 8."""
    dev = pick_device(device)
    where = f"width {width:g}, {image_size} px, {dev.type}"

    def row(name: str, precision: Precision, head: str, batch: int, n: int) -> Measurement:
        step = _train_step(precision, head, width, batch, image_size)
        return measure(f"{name}, batch {batch} ({where})", step, batch, warmup=1, repeats=n)

    fp32_nchw = Precision(dev, bf16=False, channels_last=False)
    fp32_nhwc = Precision(dev, bf16=False, channels_last=True)
    rows = [
        row("pooled head, fp32, NCHW", fp32_nchw, "pooled", batch_size, repeats),
        row("pooled head, fp32, channels_last", fp32_nhwc, "pooled", batch_size, repeats),
    ]
    bf16_batch = batch_size if dev.type == "cuda" else min(batch_size, 8)
    bf16_repeats = repeats if dev.type == "cuda" else 1
    bf16 = Precision(dev, bf16=True, channels_last=True)
    rows.append(row("pooled head, bf16, channels_last", bf16, "pooled", bf16_batch, bf16_repeats))
    faster = fp32_nchw if rows[0].per_second >= rows[1].per_second else fp32_nhwc
    layout = "channels_last" if faster.channels_last else "NCHW"
    rows.append(row(f"classic head, fp32, {layout}", faster, "classic", batch_size, repeats))
    return rows
