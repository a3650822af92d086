"""Builders of small NIH-layout directories for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cxraug.data.demo import NIH_HEADER


def write_nih(
    root: Path,
    rows: list[tuple[str, str, str]],
    size: int = 64,
    subdir: str = "images",
    metadata_name: str = "Data_Entry_2017.csv",
) -> Path:
    """rows: (image index, finding labels, patient id); images are random 8-bit grayscale PNGs."""
    folder = root / subdir
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = [NIH_HEADER]
    for name, labels, patient in rows:
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), mode="L").save(folder / name)
        lines.append(f"{name},{labels},0,{patient},40,M,PA,{size},{size},0.143,0.143")
    (root / metadata_name).write_text("\n".join(lines) + "\n")
    return root


def balanced_rows(classes: list[str], per_class: int, patients_per_class: int) -> list[tuple[str, str, str]]:
    rows = []
    for c, name in enumerate(classes):
        for i in range(per_class):
            patient = 1000 * (c + 1) + i % patients_per_class
            rows.append((f"{patient:08d}_{i:03d}.png", name, str(patient)))
    return rows


REPO = Path(__file__).resolve().parents[1]


def make_project(
    dest: Path, params_yaml: str | None = None, raw: Path | None = None, scm: bool = False
) -> Path:
    """A throwaway copy of the pipeline (dvc.yaml, params, data.dvc, src) as its own DVC project, with
    `raw` (if given) linked as its data/raw; with `scm` a git repository too (as `make demo` makes),
    where `dvc exp` and `dvc queue` work."""
    import shutil
    import subprocess

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "data.dvc", ".dvcignore"):
        shutil.copy(REPO / name, dest / name)
    (dest / "metrics" / "external").mkdir(parents=True)  # the report's dependency (its README.md in git)
    shutil.copy(REPO / "metrics" / "external" / "README.md", dest / "metrics" / "external")
    (dest / "src").symlink_to(REPO / "src")
    text = params_yaml if params_yaml is not None else (REPO / "params.yaml").read_text()
    if "\nexternal:" not in "\n" + text:  # dvc.yaml's external_* matrices read external.datasets
        text += "\nexternal:\n  datasets: []\n"
    if "\ngenerators:" not in "\n" + text:  # ... and the generator stages `generators`
        text += "\ngenerators: [bagan, opengan]\n"
    if "\nreplicates:" not in "\n" + text:  # ... and the replicated stages replicates.generator_seeds
        text += "\nreplicates:\n  generator_seeds: [0]\n"
    if "\nfilter_sensitivity:" not in "\n" + text:  # ... and synthesize_filter / classify_filter theirs
        text += "\nfilter_sensitivity:\n  gan: bagan\n  n_per_class: 4\n  modes: [none, threshold]\n"
    (dest / "params.yaml").write_text(text)
    if scm:
        for args in (["init", "-q"], ["config", "user.name", "t"], ["config", "user.email", "t@localhost"]):
            subprocess.run(["git", *args], cwd=dest, check=True)
        (dest / ".gitignore").write_text("mlruns/\ncheckpoints/\n")
    init = ["dvc", "init", "-q"] if scm else ["dvc", "init", "--no-scm", "-q"]
    subprocess.run(init, cwd=dest, check=True, env=project_env())
    subprocess.run(["dvc", "config", "core.analytics", "false"], cwd=dest, check=True, env=project_env())
    if raw is not None:
        (dest / "data").mkdir()
        (dest / "data" / "raw").symlink_to(raw)
    return dest


def dvc(project: Path, *args: str, env: dict | None = None):
    """`dvc ARGS` run in `project`, output captured (a CompletedProcess)."""
    import subprocess

    return subprocess.run(
        ["dvc", *args], cwd=project, capture_output=True, text=True, env=env or project_env()
    )


def project_env() -> dict:
    """Environment for running the CLI / dvc in a subprocess: the venv first on PATH, tracking local."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)  # each project tracks into its own mlruns/
    return env


# The tiny synthesize and classify settings of the DVC-driven tune tests (tests/tune, the several-machine
# test): every BAGAN candidate kept (a 2-epoch D ranks "generated" first, so the argmax default keeps none)
# and a 2-epoch 1/16-width VGG16.
TINY_SYNTHESIZE = {
    "filter": {"threshold": 0.0, "per_gan": {"bagan": {"mode": "threshold"}}},
    "batch_size": 64,
    "device": "cpu",
    "precision": "fp32",
}
TINY_CLASSIFY = {
    "seeds": [0],
    "budget": "epochs",
    "epochs": 2,
    "patience": 1,
    "width": 0.0625,
    "lr": 0.002,
    "device": "cpu",
    "precision": "fp32",
}
