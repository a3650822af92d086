"""The one small harness every benchmark uses: timing whole steps, counting a step's FLOPs, the matmul peak
of this machine, the timestamps of a real training loop, and markdown tables.

How a training loop is judged (`cxraug bench all`):
- FLOPs of one step, forward + backward, counted by torch.utils.flop_counter (matmuls and convolutions;
  element-wise work is not counted, as usual);
- the rate the step achieves as a share of a large matmul's rate on the same device at the same precision
  (what the hardware can do on the kind of work the step is made of);
- the real stage function (tracking, checkpoints, progress bar, metric buffers) against the same step
  function in a bare loop, interleaved step by step: the median of the per-pair ratios is the overhead of
  our machinery, with a bootstrap interval (benchmarks/ab.py).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from cxraug.benchmarks.ab import Comparison, synchronize


@dataclass(frozen=True)
class Measurement:
    name: str
    items: int  # images processed per call
    seconds: float  # median wall time of one call
    flops: float | None = None  # counted FLOPs of one call

    @property
    def per_second(self) -> float:
        return self.items / self.seconds

    @property
    def flop_rate(self) -> float | None:
        return None if self.flops is None else self.flops / self.seconds


def measure(
    name: str, step: Callable[[], object], items: int, warmup: int = 1, repeats: int = 5
) -> Measurement:
    """Median wall time of `repeats` calls after `warmup` calls (synchronised on CUDA)."""
    for _ in range(warmup):
        step()
    synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    return Measurement(name, items, statistics.median(times))


def count_flops(step: Callable[[], object]) -> float:
    """FLOPs of one call of `step` (forward and backward matmuls/convolutions), counted, not timed."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 5):
    """FLOP/s of an n x n x n matmul at `dtype`: the ceiling a step made of matmul-like work can reach.
    The fastest of `repeats` calls: a peak, not a typical figure (on shared cores the median sinks)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    a @ b
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / min(times)


@dataclass(frozen=True)
class LoopResult:
    """One training loop: its bare step, the same step inside our stage function, its FLOPs."""

    loop: str
    batch: int
    bare_seconds: float  # median step of the bare loop
    ours_seconds: float | None  # median step of the stage function (None: not measured)
    flops: float  # per step
    extra_per_epoch: float | None = None  # seconds per epoch outside steps, in the stage function
    note: str = ""
    comparison: Comparison | None = None  # ours vs bare, interleaved pairs (benchmarks/ab.py)

    @property
    def overhead(self) -> float | None:
        """The median per-pair ratio - 1 where the loops were interleaved, else the ratio of medians - 1."""
        if self.comparison is not None:
            return self.comparison.overhead
        return None if self.ours_seconds is None else self.ours_seconds / self.bare_seconds - 1

    def images_per_second(self, ours: bool = True) -> float:
        seconds = self.ours_seconds if ours and self.ours_seconds is not None else self.bare_seconds
        return self.batch / seconds

    def peak_share(self, peak: float, ours: bool = True) -> float:
        seconds = self.ours_seconds if ours and self.ours_seconds is not None else self.bare_seconds
        return self.flops / seconds / peak


def machine() -> str:
    """What the figures were measured on, and how busy it was."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((x.split(":", 1)[1].strip() for x in info if x.startswith("model name")), cpu)
    except OSError:
        pass
    parts = [
        f"{cpu}, {os.cpu_count()} cores",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
    ]
    if torch.cuda.is_available():
        parts.insert(1, torch.cuda.get_device_name())
    else:
        parts.insert(1, f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    return "; ".join(parts)


def load_average() -> str:
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def markdown_table(rows: list[Measurement], reference: Measurement | None = None) -> str:
    lines = [
        "| what | images/s | s per call |" + (" vs reference |" if reference else ""),
        "|---|---:|---:|" + ("---:|" if reference else ""),
    ]
    for m in rows:
        ratio = f" {m.per_second / reference.per_second:.2f}x |" if reference else ""
        lines.append(f"| {m.name} | {m.per_second:,.1f} | {m.seconds:.4f} |{ratio}")
    return "\n".join(lines)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    """A markdown table; `align` is one character per column, 'l' or 'r' (default: first left)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    return "\n".join("| " + " | ".join(r) + " |" for r in [list(header), rule, *map(list, rows)])
