"""precision: auto on CPU is measured once per machine and remembered, so every process agrees."""

from __future__ import annotations

import logging

import pytest
import torch

from cxraug.core import cpu_layout
from cxraug.core.runtime import pick_precision

FP32_NCHW, FP32_NHWC, BF16_NCHW, BF16_NHWC = cpu_layout.LAYOUTS


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CXRAUG_CACHE_DIR", str(tmp_path))
    cpu_layout.fastest.cache_clear()
    yield tmp_path
    cpu_layout.fastest.cache_clear()


def medians(**seconds):
    base = {FP32_NCHW: 1.0, FP32_NHWC: 1.0, BF16_NCHW: 1.0, BF16_NHWC: 1.0}
    names = {"fp32_nhwc": FP32_NHWC, "bf16_nchw": BF16_NCHW, "bf16_nhwc": BF16_NHWC}
    return base | {names[k]: v for k, v in seconds.items()}


def test_fp32_nchw_is_kept_unless_another_layout_is_clearly_faster():
    assert cpu_layout.choose(medians(bf16_nhwc=0.95)) == FP32_NCHW  # 5% is within the noise
    assert cpu_layout.choose(medians(bf16_nhwc=0.5, fp32_nhwc=0.8)) == BF16_NHWC
    assert cpu_layout.choose(medians(fp32_nhwc=0.8, bf16_nchw=20.0)) == FP32_NHWC


def test_the_decision_is_measured_once_and_every_later_process_reads_it(cache_dir, monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_layout, "measure", lambda: calls.append(1) or medians(fp32_nhwc=0.5))
    assert cpu_layout.fastest() == FP32_NHWC
    assert len(calls) == 1 and cpu_layout.decision_file().is_file()

    cpu_layout.fastest.cache_clear()  # a new process: same file, no measurement (a new one would differ)
    monkeypatch.setattr(cpu_layout, "measure", lambda: medians(bf16_nchw=0.1))
    precision = pick_precision(torch.device("cpu"), "auto")
    assert (precision.bf16, precision.channels_last) == FP32_NHWC


def test_an_unreadable_decision_file_is_measured_again_with_a_warning(cache_dir, monkeypatch, caplog):
    cpu_layout.decision_file().write_text("{not json")
    monkeypatch.setattr(cpu_layout, "measure", lambda: medians(bf16_nhwc=0.2))
    with caplog.at_level(logging.WARNING):
        assert cpu_layout.fastest() == BF16_NHWC
    assert "unreadable" in caplog.text
    assert '"bf16": true' in cpu_layout.decision_file().read_text()


def test_the_real_measurement_times_every_layout():
    timings = cpu_layout.measure(repeats=1)
    assert set(timings) == set(cpu_layout.LAYOUTS) and all(t > 0 for t in timings.values())
