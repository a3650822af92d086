"""`prepare` stage: single-label images of the chosen classes, split by patient, as uint8 arrays.

Outputs: <out>/{train,val,test}.npz (images uint8 [N,H,W], labels, patient_ids, image_index, classes),
<out>/split.csv, and a metrics JSON with counts per class and split and skipped files by reason.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxraug.core import tracking
from cxraug.core.config import PrepareParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import atomic_savez, atomic_write, atomic_write_json, progress, slug
from cxraug.data.images import BadImage, load_gray, resize_square
from cxraug.data.sources import Source, read_source
from cxraug.data.splits import split_by_patient

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


@dataclass
class PrepareResult:
    counts: dict[str, dict[str, int]]
    skipped: dict[str, int]
    images: int
    patients: int
    seconds: float
    run_id: str | None = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else float("nan")


def select_records(source: Source, params: PrepareParams, skipped: Counter) -> pd.DataFrame:
    """Single-label rows of the wanted classes with a label index; counts what is left out and why."""
    records = source.records
    single = source.single_label
    available = set(single["finding_labels"])
    unknown = [c for c in params.classes if c not in available]
    if unknown:
        raise CxraugError(
            f"class(es) {unknown} have no single-label images in {source.metadata}; "
            f"valid labels: {', '.join(sorted(available))}"
        )
    skipped["multi_label"] += len(records) - len(single)
    kept = single[single["finding_labels"].isin(params.classes)].copy()
    skipped["other_label"] += len(single) - len(kept)
    kept["label"] = kept["finding_labels"].map({c: i for i, c in enumerate(params.classes)}).astype(np.int64)
    if source.kind == "nih":
        missing = kept["path"] == ""
        skipped["missing"] += int(missing.sum())
        kept = kept[~missing]
    if params.max_per_class is not None:
        shuffled = kept.iloc[np.random.default_rng(params.seed).permutation(len(kept))]
        over = shuffled.index[(shuffled.groupby("label").cumcount() >= params.max_per_class).to_numpy()]
        skipped["over_cap"] += len(over)
        kept = kept.drop(index=over)
    skipped["duplicate_file"] += source.duplicate_files
    skipped["duplicate_row"] += source.duplicate_rows
    return kept.reset_index(drop=True)


def _decode(path: str, size: int) -> tuple[np.ndarray | None, str]:
    try:
        return load_gray(path, size), ""
    except BadImage as e:
        return None, f"{e.reason}\t{e}"


def decode_files(paths: list[str], size: int, workers: int) -> list[tuple[np.ndarray | None, str]]:
    """Decode in a process pool (PNG decoding is CPU-bound); small inputs stay in-process."""
    workers = workers or os.cpu_count() or 1
    work = partial(_decode, size=size)
    bar = progress(total=len(paths), desc="decode", unit="img")
    if workers == 1 or len(paths) < 256:
        results = []
        for p in paths:
            results.append(work(p))
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            results = []
            for r in pool.map(work, paths, chunksize=64):
                results.append(r)
                bar.update()
    bar.close()
    return results


def medmnist_images(npz_path: Path, image_index: list[str], size: int) -> list[np.ndarray]:
    """uint8 [size, size] of MedMNIST rows named 'split/row' (RGB -> L, resized unless already at size);
    shared with external validation so both convert an npz image the same way."""
    npz = np.load(npz_path)
    arrays = {s: npz[f"{s}_images"] for s in SPLITS}
    images = []
    for index in image_index:
        split, row = index.split("/")
        a = arrays[split][int(row)]
        a = a if a.ndim == 2 else np.asarray(Image.fromarray(a).convert("L"))
        images.append(a if a.shape == (size, size) else resize_square(Image.fromarray(a), size))
    return images


def load_images(source: Source, kept: pd.DataFrame, params: PrepareParams, skipped: Counter) -> pd.DataFrame:
    """Attach a uint8 image to every kept record; bad files are counted and dropped (or stop the stage)."""
    size = params.image_size
    if source.kind == "medmnist":
        return kept.assign(image=medmnist_images(source.metadata, kept["image_index"].tolist(), size))
    results = decode_files(kept["path"].tolist(), size, params.workers)
    ok = []
    for image, problem in results:
        if image is None:
            reason, detail = problem.split("\t", 1)
            if params.on_bad_image == "fail":
                raise CxraugError(f"{detail} (set prepare.on_bad_image: skip to count and skip such files)")
            log.warning("skipping %s", detail)
            skipped[reason] += 1
        ok.append(image)
    kept = kept.assign(image=ok)
    return kept[kept["image"].notna()].reset_index(drop=True)


def assign_splits(source: Source, kept: pd.DataFrame, params: PrepareParams) -> np.ndarray:
    fractions = {"train": params.train_fraction, "val": params.val_fraction, "test": params.test_fraction}
    labels, patients = kept["label"].to_numpy(), kept["patient_id"].to_numpy()
    if source.kind == "medmnist":  # no patient ids; MedMNIST's own split is NIH's patient-wise one
        return kept["official_split"].to_numpy().astype(str)
    if not params.use_official_split:
        return split_by_patient(labels, patients, fractions, params.seed)
    if not source.official_lists:
        raise CxraugError(
            f"prepare.use_official_split is true but train_val_list.txt / test_list.txt are not in "
            f"{source.root}; "
            "add NIH's lists there or set use_official_split: false"
        )
    split = np.where(kept["official_split"].to_numpy() == "test", "test", "").astype(object)
    train_val = split != "test"
    split[train_val] = split_by_patient(
        labels[train_val],
        patients[train_val],
        {"train": params.train_fraction, "val": params.val_fraction},
        params.seed,
    )
    return split.astype(str)


def check_splits(kept: pd.DataFrame, classes: list[str]) -> None:
    shared = kept.groupby("patient_id")["split"].nunique()
    if source_has_patients(kept) and (shared > 1).any():
        raise CxraugError(
            f"{int((shared > 1).sum())} patient(s) appear in two splits (the official lists disagree with "
            "Patient ID); set prepare.use_official_split: false"
        )
    for class_index, name in enumerate(classes):
        present = set(kept.loc[kept["label"] == class_index, "split"])
        if not present:
            raise CxraugError(f"class '{name}' has no usable images left; remove it from prepare.classes")
        lacking = [s for s in SPLITS if s not in present]
        if lacking:
            raise CxraugError(
                f"class '{name}' has too few patients to appear in {'/'.join(lacking)}; "
                "add images, drop the class, or raise the fraction of that split"
            )


def source_has_patients(kept: pd.DataFrame) -> bool:
    return bool((kept["patient_id"] != "").all())


def write_outputs(kept: pd.DataFrame, classes: list[str], out_dir: Path) -> None:
    for split in SPLITS:
        part = kept[kept["split"] == split]
        atomic_savez(
            out_dir / f"{split}.npz",
            images=np.stack(part["image"].tolist()).astype(np.uint8),
            labels=part["label"].to_numpy(np.int64),
            patient_ids=part["patient_id"].to_numpy().astype(str),
            image_index=part["image_index"].to_numpy().astype(str),
            classes=np.array(classes, dtype=str),
        )
    table = kept.assign(label_name=kept["label"].map(dict(enumerate(classes))))
    columns = ["image_index", "patient_id", "label_name", "split"]
    atomic_write(
        out_dir / "split.csv",
        lambda tmp: table[columns].rename(columns={"label_name": "label"}).to_csv(tmp, index=False),
    )


def count_table(kept: pd.DataFrame, classes: list[str]) -> dict[str, dict[str, int]]:
    return {
        split: {
            name: int(((kept["split"] == split) & (kept["label"] == i)).sum())
            for i, name in enumerate(classes)
        }
        for split in SPLITS
    }


def prepare(params: PrepareParams, raw_dir: Path, out_dir: Path, metrics_path: Path) -> PrepareResult:
    start = time.perf_counter()
    skipped: Counter = Counter()
    source = read_source(raw_dir, params.image_size)
    kept = select_records(source, params, skipped)
    kept = load_images(source, kept, params, skipped)
    kept["split"] = assign_splits(source, kept, params)
    check_splits(kept, params.classes)
    write_outputs(kept, params.classes, out_dir)
    seconds = time.perf_counter() - start

    counts = count_table(kept, params.classes)
    reasons = (
        "missing",
        "unreadable",
        "truncated",
        "duplicate_file",
        "duplicate_row",
        "multi_label",
        "other_label",
        "over_cap",
    )
    result = PrepareResult(
        counts=counts,
        skipped={r: int(skipped[r]) for r in reasons},
        images=len(kept),
        patients=int(kept["patient_id"].nunique()) if source_has_patients(kept) else 0,
        seconds=seconds,
    )
    result.run_id = log_to_mlflow(result, kept, params, raw_dir, source)
    metrics = {
        "images": result.images,
        "patients": result.patients,
        "per_class": {name: sum(counts[s][name] for s in SPLITS) for name in params.classes},
        "counts": counts,
        "patients_per_split": {s: int(kept.loc[kept["split"] == s, "patient_id"].nunique()) for s in SPLITS},
        "skipped": result.skipped,
        "source": source.kind,
        "split_rule": split_rule(source, params),
        "mlflow_run_id": result.run_id,
    }
    atomic_write_json(metrics_path, metrics)
    return result


def split_rule(source: Source, params: PrepareParams) -> str:
    if source.kind == "medmnist":
        return "medmnist-official"
    return "nih-official-test+patient-stratified-val" if params.use_official_split else "patient-stratified"


def log_to_mlflow(
    result: PrepareResult, kept: pd.DataFrame, params: PrepareParams, raw_dir: Path, source: Source
) -> str:
    import mlflow

    with tracking.stage_run(
        experiment="prepare", stage="prepare", params=params, inputs=[source.metadata]
    ) as run_id:
        mlflow.set_tag("data.raw_dir", str(raw_dir))
        mlflow.log_metrics(
            {f"count.{s}.{slug(c)}": n for s, per in result.counts.items() for c, n in per.items()}
        )
        mlflow.log_metrics({f"skipped.{r}": n for r, n in result.skipped.items()})
        mlflow.log_metrics(
            {
                "images": result.images,
                "patients": result.patients,
                "images_per_second": result.images_per_second,
                "seconds": result.seconds,
            }
        )
        train = kept[kept["split"] == "train"]
        for i, name in enumerate(params.classes):
            sample = train.loc[train["label"] == i, "image"].head(32).tolist()
            if sample:
                tracking.log_grid(np.stack(sample), key=f"samples/{slug(name)}")
    return run_id
