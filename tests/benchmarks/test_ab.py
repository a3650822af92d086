"""The interleaved A/B verdict on simulated timings: how often it says met / not met / unresolved when the
true overhead and the noise are known; and the on_step clock pairs a stage step with the bare step."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np
import pytest

from cxraug.benchmarks.ab import InterleavedClock, compare

TARGET = 0.05


def _verdicts(overhead: float, noise: float, pairs: int = 30, runs: int = 100, drift: bool = True) -> Counter:
    """Verdicts of `runs` simulated benchmark runs: bare steps of 1 s with multiplicative noise and a load
    drift shared by each (ours, bare) pair (what interleaving cancels); ours = bare x (1 + overhead)."""
    rng = np.random.default_rng(0)
    out = Counter()
    for _ in range(runs):
        load = np.exp(rng.normal(0, 0.3, pairs)) if drift else 1.0  # other processes: +-30% pair to pair
        bare = load * np.exp(rng.normal(0, noise, pairs))
        ours = load * (1 + overhead) * np.exp(rng.normal(0, noise, pairs))
        out[compare(ours, bare, n_resamples=500).verdict(TARGET)] += 1
    return out


def test_a_true_zero_overhead_with_small_noise_is_met_despite_load_drift():
    seen = _verdicts(0.0, 0.01)
    assert seen["met"] >= 95 and seen["not met"] == 0, seen


def test_a_true_twenty_percent_overhead_is_not_met():
    seen = _verdicts(0.20, 0.01)
    assert seen["not met"] >= 95 and seen["met"] == 0, seen


def test_huge_noise_is_unresolved_never_a_verdict_either_way():
    seen = _verdicts(0.0, 0.30)
    assert seen["unresolved"] >= 95, seen


def test_an_overhead_just_above_the_target_is_rarely_called_met():
    """The false-'met' rate at a true 7% (above the 5% target): the interval's upper end must exclude it."""
    seen = _verdicts(0.07, 0.02)
    assert seen["met"] <= 5, seen


def test_comparison_reports_the_median_ratio_and_rejects_unpaired_timings():
    c = compare([1.1, 1.2, 1.3], [1.0, 1.0, 1.0])
    assert c.overhead == pytest.approx(0.2) and c.low <= c.overhead <= c.high and c.pairs == 3
    assert compare([2.0, 2.0], [1.0, 1.0]).spread == 0
    with pytest.raises(ValueError, match="pairs"):
        compare([1.0, 1.0], [1.0])


def test_interleaved_clock_times_the_stage_step_without_the_bare_step_it_runs():
    """A fake stage loop: its step sleeps 4 ms, the bare step 2 ms. If the bare step leaked into the
    stage's intervals the ratio would be ~3, not ~2."""
    clock = InterleavedClock(lambda: time.sleep(0.002))
    for step in range(12):
        time.sleep(0.004)
        clock(step)
    c = clock.comparison()
    assert c.pairs == 10
    assert 0.6 < c.overhead < 1.6, c.describe()


def test_interleaved_clock_leaves_the_epoch_end_work_out_of_the_per_step_comparison():
    """A fake loop with 5 steps per epoch whose epoch end (after the last step, before its hook, as in
    train_bagan) costs 40 ms against 3 ms steps and a 3 ms bare step: the comparison keeps only the steps
    away from an epoch end (so the overhead is ~0, not pulled up by one slow pair in five), and the epoch
    work is still counted per epoch."""
    clock = InterleavedClock(lambda: time.sleep(0.003), per_epoch=5)
    for step in range(1, 21):
        time.sleep(0.003)
        if step % 5 == 0:
            time.sleep(0.040)
        clock(step)
    c = clock.comparison()
    assert c.pairs == 11  # steps 3-20 (2 is the warm-up) less 5, 6, 10, 11, 15, 16 and 20
    assert abs(c.overhead) < 0.5 and c.high < 1.0, c.describe()
    assert all(o < 0.02 for o in c.ours)  # no pair holds an epoch's 40 ms
    assert clock.extra_per_epoch(4) > 0.03  # the epoch work is reported apart, not lost
