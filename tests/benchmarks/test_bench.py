"""The benchmark suite in smoke mode (tiny nets and data): every row is there with sane positive figures,
and the report is written as markdown and JSON. Timings themselves are not asserted."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from cxraug.benchmarks import scale, suite
from cxraug.core.config import Params
from cxraug.core.runtime import pick_device, pick_precision
from tests.helpers import project_env

LOOPS = [
    "BAGAN autoencoder",
    "BAGAN GAN step (D + G)",
    "embedder step",
    "OpenGAN step (D + G)",
    "classifier step",
    "diffusion step",
    "diffusion sampler",
]


@pytest.fixture(scope="module")
def report(tracking_uri):
    return suite.run(Params(), smoke=True)


def test_every_loop_is_measured_bare_and_inside_its_stage_against_the_matmul_peak(report):
    assert [r.loop for r in report.loops] == LOOPS
    precision = pick_precision(pick_device("auto"), "auto")  # what the stages run at here
    dtype = "bf16" if precision.bf16 else "fp32"
    assert report.peaks[dtype] > 1e8  # FLOP/s of a matmul: any CPU does more than 0.1 GFLOP/s
    for r in report.loops:
        assert r.batch == 16 and r.flops > 0 and r.bare_seconds > 0 and r.ours_seconds > 0
        assert 0 < r.peak_share(report.peaks[dtype]) < 2, r  # the peak bounds what a step can reach
        assert r.overhead > -1 and math.isfinite(r.overhead)
        # the precision the stage ran at, stated (the diffusion sampler runs fp32 on CPU: measured faster)
        ran = "fp32" if r.loop == "diffusion sampler" and precision.device.type == "cpu" else dtype
        assert f"{precision.device.type}/{ran}/" in r.note
    # FLOPs are counted, not guessed: the GAN step does more work per image than the autoencoder
    ae, gan = report.loops[0], report.loops[1]
    assert gan.flops > ae.flops


def test_gan_steps_are_compared_with_the_dcgan_style_loop_at_both_png_sizes(report):
    assert set(report.references) == {"BAGAN GAN step (D + G)", "OpenGAN step (D + G)"}
    for refs in report.references.values():
        assert sorted(refs) == [32, 128] and all(s > 0 for s in refs.values())
    paths = [m.name for m in report.data]
    assert len(paths) == 4 and "memory-mapped" in paths[1] and all(m.per_second > 0 for m in report.data)


def test_report_has_every_row_and_a_verdict_per_target_in_markdown_and_json(report, tmp_path):
    text = suite.markdown(report)
    for loop in LOOPS:
        row = next(line for line in text.splitlines() if line.startswith(f"| {loop} |"))
        figures = [float(x.replace(",", "").rstrip("%")) for x in re.findall(r"\| ([\d.,]+%?) (?=\|)", row)]
        assert len(figures) >= 5 and all(f > 0 for f in figures[:4]), row
    assert text.count("| BAGAN GAN step (D + G) | ") == 2  # the loops table and the reference table
    verdicts = suite.verdicts(report)
    assert len(verdicts) == 4
    # the overhead verdict follows the rows' intervals: not met if any row's lies above the target,
    # else unresolved if any row's is too wide or contains it, else met
    said_rows = [r.comparison.verdict(suite.OVERHEAD_TARGET) for r in report.loops if r.comparison]
    assert len(said_rows) == len(LOOPS)  # every loop, the sampler too, was timed interleaved
    overall = "not met" if "not met" in said_rows else "unresolved" if "unresolved" in said_rows else "met"
    assert verdicts[0].startswith(f"machinery overhead <= 5%: {overall.replace('not met', '**not met**')} (")
    for r in report.loops:
        c = r.comparison
        assert c.low <= c.overhead <= c.high and c.pairs >= 2
        assert r.overhead == c.overhead and c.describe() in verdicts[0]
    expected = []
    ours = {r.loop: r for r in report.loops}
    for loop, refs in report.references.items():
        expected.append(all(refs[side] / ours[loop].ours_seconds >= suite.REFERENCE_TARGET for side in refs))
    step = ours["classifier step"]
    peak = report.peaks["bf16" if "bf16" in step.note else "fp32"]
    expected.append(step.peak_share(peak) >= suite.PEAK_TARGET)
    said = [": met (" in v for v in verdicts[1:]]
    assert said == expected and all(
        (": **not met** (" in v) != s for v, s in zip(verdicts[1:], said, strict=True)
    )

    path = suite.write(report, tmp_path / "bench.md")
    assert path.read_text().startswith("# cxraug benchmarks") and "Targets:" in path.read_text()
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [x["loop"] for x in data["loops"]] == LOOPS
    assert all(x["ours_images_per_second"] > 0 and x["ours_peak_share"] > 0 for x in data["loops"])
    assert set(data["references"]["OpenGAN step (D + G)"]) == {"32", "128"}
    assert not list(tmp_path.glob("*.tmp*")), "atomic writes leave no temporary file"


def test_scale_points_grow_with_the_data_and_memory_map_at_128_px(tmp_path, demo_raw, tracking_uri):
    small = scale.measure_point(scale.subset(demo_raw, 200, tmp_path / "r200"), 200, 32, tmp_path)
    large = scale.measure_point(scale.subset(demo_raw, 400, tmp_path / "r400"), 400, 32, tmp_path)
    assert large.train_images > small.train_images > 0
    assert large.images_mb == pytest.approx(small.images_mb * large.train_images / small.train_images)
    assert not small.memory_mapped
    mapped = scale.measure_point(scale.subset(demo_raw, 200, tmp_path / "m200"), 200, 128, tmp_path)
    assert mapped.memory_mapped and mapped.load_rss_mb < mapped.images_mb / 2
    assert "| 200 | 128 (mmap) |" in scale.markdown([small, large, mapped])


def test_load_split_memory_maps_large_images_and_reads_small_ones(tmp_path):
    from cxraug.core.runtime import atomic_savez
    from cxraug.data.datasets import load_split

    for side in (32, 128):
        atomic_savez(
            tmp_path / f"{side}/train.npz",
            images=np.arange(3 * side * side, dtype=np.uint8).reshape(3, side, side),
            labels=np.array([0, 1, 0]),
            patient_ids=np.array(["1", "2", "3"]),
            image_index=np.array(["a", "b", "c"]),
            classes=np.array(["x", "y"]),
        )
        split = load_split(tmp_path / str(side), "train")
        assert split.memory_mapped == (side >= 128)
        expected = torch.arange(3 * side * side, dtype=torch.int64).remainder(256).to(torch.uint8)
        assert torch.equal(split.images.flatten(), expected)  # the same pixels either way
    assert not load_split(tmp_path / "128", "train", mmap=False).memory_mapped


def test_bench_verbs_explain_themselves_and_reject_bad_counts():
    out = subprocess.run(
        [sys.executable, "-m", "cxraug.cli", "bench", "scale", "--counts", "ten"],
        capture_output=True,
        text=True,
        env=project_env(),
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "comma-separated" in out.stderr
    shown = subprocess.run(
        [sys.executable, "-m", "cxraug.cli", "bench", "all", "--help"],
        capture_output=True,
        text=True,
        env=project_env(),
    )
    assert shown.returncode == 0 and "--smoke" in shown.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_split_goes_to_cuda_through_pinned_memory_unchanged(tmp_path):
    from cxraug.data.datasets import Split

    images = torch.randint(0, 256, (10, 32, 32), dtype=torch.uint8)
    split = Split(images, torch.arange(10) % 2, ("a", "b"), np.arange(10), np.arange(10))
    on_gpu = split.to("cuda")
    assert on_gpu.images.is_cuda and torch.equal(on_gpu.images.cpu(), images)
    assert torch.equal(on_gpu.labels.cpu(), split.labels) and not on_gpu.memory_mapped
