"""`precision: auto` on CPU: which of fp32/bf16 × NCHW/NHWC runs a conv step fastest on this machine,
measured once and remembered, so that every process of a study trains at the same precision.

Measuring in every process made the choice flip from process to process on a CPU where the layouts are
close (an AMX host picked bf16/nhwc, bf16/nchw and fp32/nhwc in one `dvc repro`), and the same images then
trained to different AUCs. The decision is stored per machine, torch version and thread count in
`$CXRAUG_CACHE_DIR` (default `~/.cache/cxraug`); a lock makes concurrent first processes (DVC stages,
torchrun ranks) wait for one measurement. Delete the file to measure again; pin `precision: fp32` for
results that must repeat bit for bit across machines.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from functools import cache
from pathlib import Path

import torch

log = logging.getLogger(__name__)

LAYOUTS = ((False, False), (False, True), (True, False), (True, True))  # (bf16, channels_last)
# leave fp32 NCHW (the reference numerics) only for a clear gain: bf16 changes results, and layouts
# within a few percent of each other are within the timing's noise
MIN_GAIN = 1.10
REPEATS = 7


def describe(layout: tuple[bool, bool]) -> str:
    bf16, channels_last = layout
    return f"{'bf16' if bf16 else 'fp32'}/{'nhwc' if channels_last else 'nchw'}"


def conv_step_seconds(bf16: bool, channels_last: bool) -> float:
    """One forward + backward of a VGG-sized 3×3 conv (64 → 64 channels, 16 images at 32 px)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(memory_format=fmt)
    x = torch.randn(16, 64, 32, 32).to(memory_format=fmt)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = conv(x)
    y.float().sum().backward()
    return time.perf_counter() - start


def choose(medians: dict[tuple[bool, bool], float], min_gain: float = MIN_GAIN) -> tuple[bool, bool]:
    """The fastest layout, unless fp32/NCHW is within `min_gain` of it."""
    fastest = min(medians, key=medians.get)
    return fastest if medians[(False, False)] > min_gain * medians[fastest] else (False, False)


def measure(repeats: int = REPEATS) -> dict[tuple[bool, bool], float]:
    """Median step time per layout, the layouts interleaved so that drifting load hits each alike."""
    for layout in LAYOUTS:
        conv_step_seconds(*layout)  # warm-up: first calls pick kernels and allocate
    times: dict[tuple[bool, bool], list[float]] = {layout: [] for layout in LAYOUTS}
    for _ in range(repeats):
        for layout in LAYOUTS:
            times[layout].append(conv_step_seconds(*layout))
    return {layout: statistics.median(t) for layout, t in times.items()}


def _machine_key() -> str:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")), cpu)
    parts = [cpu, torch.backends.cpu.get_cpu_capability(), torch.__version__, str(torch.get_num_threads())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def decision_file() -> Path:
    root = Path(os.environ.get("CXRAUG_CACHE_DIR") or Path.home() / ".cache" / "cxraug")
    return root / f"cpu-layout-{_machine_key()}.json"


def _read(path: Path) -> tuple[bool, bool] | None:
    try:
        saved = json.loads(path.read_text())
        return bool(saved["bf16"]), bool(saved["channels_last"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable %s: measuring the CPU layout again", path)
        return None


@cache
def fastest() -> tuple[bool, bool]:
    """(bf16, channels_last) for this machine: read from the decision file, else measured and saved."""
    path = decision_file()
    saved = _read(path)
    if saved is not None:
        return saved
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process measures; the others wait and read its decision
        saved = _read(path)
        if saved is not None:
            return saved
        medians = measure()
        bf16, channels_last = choose(medians)
        record = {
            "bf16": bf16,
            "channels_last": channels_last,
            "median_seconds": {describe(layout): s for layout, s in medians.items()},
            "measured": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
        log.info("precision auto on this CPU: %s (saved in %s)", record["median_seconds"], path)
        return bf16, channels_last
