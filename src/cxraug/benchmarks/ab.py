"""A/B timing that can resolve a few percent on shared cores: ours and bare steps interleaved (ours, bare,
ours, bare, ...), so load from other processes and clock drift hit both alike; the overhead is the median
of the per-pair ratios ours_i / bare_i - 1, with a bootstrap confidence interval of that median.

Verdict against a target t (e.g. 5%), from the interval [low, high] of the median overhead:
- "unresolved" when the interval is wider than t (the run cannot tell 0 from t), or when it contains t;
- "met" when high <= t; "not met" when low > t.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

CONFIDENCE = 0.95


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait for the accelerator: a step is timed when its work is done, not when it was queued."""
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.synchronize()


@dataclass(frozen=True)
class Comparison:
    """ours vs bare over interleaved pairs; overheads are ratios - 1."""

    ours: tuple[float, ...]  # seconds of each ours step
    bare: tuple[float, ...]  # seconds of the bare step timed right after it
    overhead: float  # median of ours_i / bare_i, minus 1
    low: float  # bootstrap percentile interval of that median (CONFIDENCE), minus 1
    high: float

    @property
    def spread(self) -> float:
        return self.high - self.low

    @property
    def pairs(self) -> int:
        return len(self.ours)

    def verdict(self, target: float) -> str:
        if self.spread > target or self.low <= target < self.high:
            return "unresolved"
        return "met" if self.high <= target else "not met"

    def describe(self) -> str:
        return f"{self.overhead:+.1%} [{self.low:+.1%}, {self.high:+.1%}], {self.pairs} pairs"


def compare(
    ours: Sequence[float], bare: Sequence[float], n_resamples: int = 2000, seed: int = 0
) -> Comparison:
    """The median per-pair ratio and its bootstrap interval (pairs resampled together)."""
    if len(ours) != len(bare) or len(ours) < 2:
        raise ValueError(f"need >= 2 pairs of timings, got {len(ours)} ours and {len(bare)} bare")
    ratios = np.asarray(ours, float) / np.asarray(bare, float)
    median = float(np.median(ratios))
    if np.ptp(ratios) == 0:  # every pair identical: no spread to resample
        low = high = median
    else:
        ci = stats.bootstrap(
            (ratios,),
            np.median,
            confidence_level=CONFIDENCE,
            n_resamples=n_resamples,
            method="percentile",
            rng=np.random.default_rng(seed),
        ).confidence_interval
        low, high = float(ci.low), float(ci.high)
    return Comparison(tuple(ours), tuple(bare), median - 1, low - 1, high - 1)


def _timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    synchronize()
    return time.perf_counter() - start


def interleave(
    ours: Callable[[], object], bare: Callable[[], object], pairs: int, warmup: int = 1
) -> Comparison:
    """Time `pairs` rounds of (ours, bare) after `warmup` untimed rounds."""
    for _ in range(warmup):
        ours(), bare()
    synchronize()
    times = [(_timed(ours), _timed(bare)) for _ in range(pairs)]
    return compare([a for a, _ in times], [b for _, b in times])


class InterleavedClock:
    """An `on_step` hook that interleaves a bare step with the steps of a real training loop: each call
    ends the stage's step interval, then runs and times one bare step; the next stage interval starts
    when the bare step is done. So the stage function's steps (with all their machinery) and the bare
    loop's alternate in one process."""

    def __init__(self, bare: Callable[[], object], phase: str | None = None, per_epoch: int = 0) -> None:
        self.bare, self.phase, self.per_epoch = bare, phase, per_epoch
        self.ours: list[float] = []
        self.bare_times: list[float] = []
        self._resumed: float | None = None

    def __call__(self, *args) -> None:
        if self.phase is not None and args[0] != self.phase:  # generators' hook: (phase, step, nets)
            return
        synchronize()
        now = time.perf_counter()
        if self._resumed is not None:
            self.ours.append(now - self._resumed)
        self.bare_times.append(_timed(self.bare))
        self._resumed = time.perf_counter()

    def comparison(self, skip: int = 1) -> Comparison:
        """Pairs (stage step k, the bare step before it), the first `skip` stage steps left out (warm-up:
        the stage's first step has no interval; the next carries first-call costs). With `per_epoch`
        (steps per epoch, > 2) the steps either side of each epoch end are left out too: the epoch end's
        held-out checks and grids fall inside one of them (which one depends on the loop), and that work
        is per epoch, reported apart (`extra_per_epoch`), not per-step machinery."""
        pairs = [
            (ours, bare)
            for j, (ours, bare) in enumerate(zip(self.ours, self.bare_times, strict=False))  # bare: 1 more
            if j >= skip and not self.at_epoch_end(j + 2)  # ours[j] is the interval of stage step j + 2
        ]
        return compare([o for o, _ in pairs], [b for _, b in pairs])

    def at_epoch_end(self, step: int) -> bool:
        """Whether stage step `step` (1-based) is the last of an epoch or the first of the next."""
        return self.per_epoch > 2 and step % self.per_epoch in (0, 1)

    def median(self) -> float:
        return statistics.median(self.ours)

    def bare_median(self) -> float:
        return statistics.median(self.bare_times[1:] or self.bare_times)

    def extra_per_epoch(self, epochs: int) -> float:
        """Seconds per epoch the stage spent outside typical steps (held-out checks, checkpoints)."""
        return max(0.0, sum(self.ours) - len(self.ours) * self.median()) / max(epochs, 1)
