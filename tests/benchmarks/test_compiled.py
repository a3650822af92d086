"""`cxraug bench compile`: the verdict reads the interval, not the median; the benchmark runs end to end on
tiny nets (slow: torch.compile itself takes tens of seconds on CPU)."""

from __future__ import annotations

import shutil

import pytest

from cxraug.benchmarks import compiled, suite
from cxraug.benchmarks.ab import compare
from cxraug.core.config import Params


def _result(ours, bare) -> compiled.CompileResult:
    return compiled.CompileResult("loop", 8, 1.0, 1.0, 1.0, compare(ours, bare))


def test_compiled_is_called_faster_only_when_its_whole_interval_lies_below_zero():
    bare = [1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97]
    assert _result([0.80 * b for b in bare], bare).verdict() == "faster"
    assert _result([1.20 * b for b in bare], bare).verdict() == "slower"
    # a median 6% faster, but pairs from 0.7 to 1.3: the interval holds 0, so nothing is claimed
    mixed = [0.7, 1.3, 0.9, 1.1, 0.95, 0.92, 1.25, 0.75]
    assert _result(mixed, [1.0] * 8).verdict() == "unresolved"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None, reason="no C compiler")
def test_bench_compile_times_both_loops_compiled_and_eager(tracking_uri):
    results = compiled.run(suite.smoke_params(Params()), pairs=4)
    assert [r.loop for r in results] == list(compiled.LOOPS)
    for r in results:
        assert r.comparison.pairs == 4 and r.eager_seconds > 0 and r.compiled_seconds > 0
        assert r.first_compiled_step > r.compiled_seconds  # the first call compiles
    text = compiled.markdown(results, "cpu/fp32/nchw")
    assert all(r.loop in text for r in results)
