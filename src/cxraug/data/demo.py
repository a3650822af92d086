"""`cxraug demo-data`: a deterministic synthetic dataset in the NIH layout, for smoke and scale runs.

Phantom chest images (body, lungs, heart, spine, ribs) with a class-specific finding drawn in:
Infiltration = patchy opacities, Atelectasis = a dense band and a raised hemidiaphragm, Effusion = fluid
with a meniscus at a lung base, Nodule = a small round opacity. Class shares follow the real
single-label data. Every file says it is synthetic; it is never medical data.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter, PngImagePlugin

from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_write, progress

NIH_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
# Single-label shares of the five classes in the full NIH metadata (60,361 / 9,547 / 4,215 / 3,955 / 2,705)
CLASS_SHARES = {
    "No Finding": 0.747,
    "Infiltration": 0.118,
    "Atelectasis": 0.052,
    "Effusion": 0.049,
    "Nodule": 0.034,
}
OTHER_LABELS = {"Cardiomegaly": 0.4, "Effusion|Infiltration": 0.3, "Atelectasis|Nodule": 0.3}
OTHER_SHARE = 0.10  # rows that `prepare` must filter out (other classes, multi-label)
NOTICE = "SYNTHETIC PHANTOM made by cxraug demo-data - not a medical image, not NIH data"


@dataclass(frozen=True)
class Anatomy:
    cx: float
    lung_dx: float
    lung_rx: float
    lung_ry: float
    lung_cy: float
    heart_r: float
    body_rx: float


def _anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        cx=0.5 + rng.normal(0, 0.015),
        lung_dx=0.19 + rng.normal(0, 0.01),
        lung_rx=0.13 + rng.normal(0, 0.01),
        lung_ry=0.27 + rng.normal(0, 0.015),
        lung_cy=0.47 + rng.normal(0, 0.015),
        heart_r=0.11 + rng.normal(0, 0.008),
        body_rx=0.42 + rng.normal(0, 0.02),
    )


def _ellipse(x, y, cx, cy, rx, ry, soft=0.04):
    d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1 - d) / soft, 0, 1)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    coarse = rng.random((cells, cells)).astype(np.float32)
    image = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.float32) / 255


def render(labels: list[str], anatomy: Anatomy, rng: np.random.Generator, size: int) -> np.ndarray:
    """One phantom as uint8 [size, size]; `labels` are the findings drawn into it."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    a = anatomy
    # exposure and noise first, so that the same rng state renders the same film with or without a finding
    gain, gamma = rng.uniform(0.9, 1.1), rng.uniform(0.85, 1.15)
    film_noise, sensor_noise = rng.normal(0, 0.015, (size, size)), rng.normal(0, 3.0, (size, size))
    heart_scale = 1.45 if "Cardiomegaly" in labels else 1.0
    sides = [(-1, a.cx - a.lung_dx), (1, a.cx + a.lung_dx)]
    raised = rng.integers(2) if "Atelectasis" in labels else -1

    image = 0.06 + 0.52 * _ellipse(x, y, a.cx, 0.55, a.body_rx, 0.55, soft=0.08)
    lungs = np.zeros_like(x)
    for i, (_, lx) in enumerate(sides):
        ry = a.lung_ry * (0.85 if i == raised else 1.0)
        cy = a.lung_cy - (a.lung_ry - ry) * 0.6
        lungs = np.maximum(lungs, _ellipse(x, y, lx, cy, a.lung_rx, ry, soft=0.12))
    ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (y * 9 + 1.5 * (x - a.cx) ** 2))
    image = image - lungs * (0.36 - 0.06 * ribs)
    image += 0.22 * _ellipse(
        x, y, a.cx + 0.05, 0.64, a.heart_r * heart_scale, a.heart_r * 0.9 * heart_scale, 0.2
    )
    image += 0.18 * np.clip(1 - np.abs(x - a.cx) / 0.035, 0, 1) * (y > 0.08)

    side, lx = sides[rng.integers(2)]
    if "Nodule" in labels:
        r = rng.uniform(0.022, 0.035)
        ny = a.lung_cy + rng.uniform(-0.5, 0.5) * a.lung_ry
        nx = lx + rng.uniform(-0.5, 0.5) * a.lung_rx
        image += 0.32 * np.exp(-(((x - nx) ** 2 + (y - ny) ** 2) / (2 * r**2)))
    if "Effusion" in labels:
        base = a.lung_cy + a.lung_ry * rng.uniform(0.35, 0.6)
        meniscus = base - 3.0 * (side * (x - lx) + a.lung_rx) ** 2 * 0.5
        fluid = np.clip((y - meniscus) / 0.02, 0, 1) * (np.abs(x - lx) < a.lung_rx * 1.1)
        image += 0.30 * fluid * lungs
    if "Atelectasis" in labels:
        _, ax = sides[raised]
        band = _ellipse(x, y, ax, a.lung_cy + 0.12, a.lung_rx * 0.9, 0.025, soft=0.5)
        image += 0.28 * band
    if "Infiltration" in labels:
        patches = np.clip((_smooth_noise(rng, size, 7) - 0.55) * 4, 0, 1)
        image += 0.25 * patches * lungs * (0.5 + 0.5 * (np.sign(x - a.cx) == side))

    image = np.clip(image * gain + film_noise, 0, 1) ** gamma
    pil = Image.fromarray((image * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(size / 160))
    noisy = np.asarray(pil, dtype=np.float32) + sensor_noise
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _draw_label(rng: np.random.Generator, previous: str | None) -> str:
    if previous is not None and rng.random() < 0.5:  # follow-ups often keep the finding
        return previous
    if rng.random() < OTHER_SHARE:
        return str(rng.choice(list(OTHER_LABELS), p=list(OTHER_LABELS.values())))
    return str(
        rng.choice(list(CLASS_SHARES), p=np.array(list(CLASS_SHARES.values())) / sum(CLASS_SHARES.values()))
    )


def make_demo_data(
    out_dir: str | Path, n_images: int = 2000, size: int = 128, seed: int = 0, force: bool = False
) -> dict[str, int]:
    """Write the demo dataset; returns the number of images per Finding Labels value."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise CxraugError(f"{out} is not empty; pass --force to replace it")
        shutil.rmtree(out)
    rng = np.random.default_rng(seed)
    rows, test_patients, counts = [], set(), {}
    patient = 0
    bar = progress(total=n_images, desc="demo images", unit="img")
    info = PngImagePlugin.PngInfo()
    info.add_text("Description", NOTICE)
    while len(rows) < n_images:
        patient += 1
        anatomy = _anatomy(rng)
        if rng.random() < 0.2:
            test_patients.add(patient)
        label = None
        for follow_up in range(min(int(rng.geometric(0.45)), 8, n_images - len(rows))):
            label = _draw_label(rng, label)
            name = f"{patient:08d}_{follow_up:03d}.png"
            folder = out / f"images_{1 + (patient - 1) % 2:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = render(label.split("|"), anatomy, rng, size)
            Image.fromarray(pixels, mode="L").save(folder / name, pnginfo=info)
            age, sex, view = (
                int(rng.integers(18, 90)),
                str(rng.choice(["M", "F"])),
                str(rng.choice(["PA", "AP"])),
            )
            rows.append(f"{name},{label},{follow_up},{patient},{age},{sex},{view},{size},{size},0.143,0.143")
            counts[label] = counts.get(label, 0) + 1
            bar.update()
    bar.close()
    names = [r.split(",", 1)[0] for r in rows]
    in_test = [int(n[:8]) in test_patients for n in names]
    atomic_write(out / "Data_Entry_2017.csv", lambda t: t.write_text("\n".join([NIH_HEADER, *rows]) + "\n"))
    atomic_write(
        out / "test_list.txt",
        lambda t: t.write_text("\n".join(n for n, s in zip(names, in_test, strict=True) if s) + "\n"),
    )
    atomic_write(
        out / "train_val_list.txt",
        lambda t: t.write_text("\n".join(n for n, s in zip(names, in_test, strict=True) if not s) + "\n"),
    )
    (out / "README.txt").write_text(
        f"{NOTICE}.\nMade by `cxraug demo-data` (seed {seed}, {n_images} images, {size}x{size}) to run the "
        "pipeline without downloading NIH ChestX-ray14. Results on it say nothing about real X-rays.\n"
    )
    return counts
