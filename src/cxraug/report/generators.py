"""The report's "Generators" section: what produced each GAN's synthetic images, and whether they show
the class they were drawn for.

- Provenance: data/synthetic/<gan>/provenance.json, written by synthesize from the trainer's recipe.json
  (generator, consistency term, ...) and the filter the images passed.
- Class-specificity: an independent reader (report/reader.py, a small CNN) fitted on three quarters of the
  real training images reads the first `per_class` accepted images of every class; the section gives the
  share read as the intended class (per class and overall) beside the reader's accuracy and balanced
  accuracy on the remaining quarter (what the reader itself is worth).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cxraug.data.datasets import load_split
from cxraug.gans import registry
from cxraug.report.reader import ImageReader
from cxraug.synthesis.files import read_png, read_provenance


def class_specificity(
    reader: ImageReader, directory: Path, index, classes: tuple[str, ...], per_class: int
) -> dict[str, float]:
    """Share of each class's first `per_class` accepted images that the reader reads as that class, and
    "overall" (pooled over classes). Classes without images are left out."""
    shares, hits, total = {}, 0, 0
    for label, name in enumerate(classes):
        files = index[index["label"] == label]["file"].head(per_class).tolist()
        if not files:
            continue
        read = reader.read(np.stack([read_png(Path(directory) / f) for f in files]))
        shares[name] = float((read == label).mean())
        hits, total = hits + int((read == label).sum()), total + len(files)
    if total:
        shares["overall"] = hits / total
    return shares


def describe(provenance: dict | None) -> str:
    """One cell: generator, consistency term and filter, from provenance.json."""
    if not provenance:
        return "unknown (synthesized before provenance.json existed; rerun synthesize)"
    parts = [f"generator {provenance.get('generator', '?')}"]
    if "consistency" in provenance:
        weight = provenance.get("consistency_weight")
        parts.append(f"consistency {weight:g} x {provenance['consistency']}")
    if provenance.get("d_steps", 1) != 1:  # the schedule, where it is not the reference's
        parts.append(f"{provenance['d_steps']} D steps per G step")
    if provenance.get("ema_decay"):
        parts.append(f"EMA {provenance['ema_decay']:g} of G")
    if "prediction_type" in provenance:
        parts.append(f"predicts {provenance['prediction_type']}")
    if "sampler" in provenance:
        s = provenance["sampler"]
        parts.append(f"sampler {s['sampler']}, {s['steps']} steps, guidance {s['guidance']:g}")
    if "cov_estimator" in provenance:
        parts.append(f"class covariance {provenance['cov_estimator']}, draw {provenance['class_sampling']}")
    f = provenance.get("filter", {})
    mode = f.get("mode", "none")
    if mode == "threshold":
        parts.append(f"filter: score >= {f['threshold']:g}")
    elif mode == "argmax":
        parts.append("filter: the discriminator's top class is the intended one")
    else:
        parts.append("unfiltered")
    return "; ".join(parts)


def generators_section(
    synthetic_dir: Path, indexes: dict, prepared: Path, classes: tuple[str, ...], per_class: int = 200
) -> str:
    """Markdown: one row per synthesized GAN (its column label, provenance, share read as intended)."""
    if not indexes:
        return ""
    train = load_split(prepared, "train")
    images, labels = train.images.numpy(), train.labels.numpy()
    held_out = np.arange(len(labels)) % 4 == 0  # the reader's own worth: fit on 3/4, read the rest
    reader = ImageReader(images[~held_out], labels[~held_out], classes=len(classes))
    read = reader.read(images[held_out])
    accuracy = float((read == labels[held_out]).mean())
    present = np.unique(labels[held_out])
    balanced = float(np.mean([(read[labels[held_out] == k] == k).mean() for k in present]))
    lines = [
        "## Generators",
        "",
        f"What produced each GAN column, and the share of its accepted images (first {per_class} per class) "
        "that a small CNN fitted on three quarters of the real training images reads as the intended class "
        f"(the reader on the other quarter: accuracy {accuracy:.2f}, balanced accuracy {balanced:.2f}, "
        f"chance {1 / len(classes):.2f}).",
        "",
        "| column | made by | read as intended | " + " | ".join(classes) + " |",
        "|---|---|---|" + "---|" * len(classes),
    ]
    for gan, index in indexes.items():
        label = registry.get(gan).label if gan in registry.names() else gan
        directory = Path(synthetic_dir) / gan
        shares = class_specificity(reader, directory, index, classes, per_class)
        cells = [f"{shares[c]:.2f}" if c in shares else "—" for c in classes]
        overall = f"{shares['overall']:.2f}" if "overall" in shares else "—"
        lines.append(
            f"| {label} | {describe(read_provenance(directory))} | {overall} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"
