"""Timing helpers shared by the benchmarks: warm up, then time whole steps; report a markdown table."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    name: str
    items: int  # images processed per call
    seconds: float  # median wall time of one call

    @property
    def per_second(self) -> float:
        return self.items / self.seconds


def measure(
    name: str, step: Callable[[], object], items: int, warmup: int = 1, repeats: int = 5
) -> Measurement:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return Measurement(name, items, sorted(times)[len(times) // 2])


def markdown_table(rows: list[Measurement], reference: Measurement | None = None) -> str:
    lines = [
        "| what | images/s | s per call |" + (" vs reference |" if reference else ""),
        "|---|---:|---:|" + ("---:|" if reference else ""),
    ]
    for m in rows:
        ratio = f" {m.per_second / reference.per_second:.2f}x |" if reference else ""
        lines.append(f"| {m.name} | {m.per_second:,.1f} | {m.seconds:.4f} |{ratio}")
    return "\n".join(lines)
