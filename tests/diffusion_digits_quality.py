"""Measure the diffusion model on the digits fixture (not collected by pytest: minutes long).

    PYTHONPATH=src:. OMP_NUM_THREADS=1 python -m tests.diffusion_digits_quality --out /tmp/d/cosine \\
        --set lr_schedule=cosine --sample ddim:20:2 --sample dpm_solver:20:2

Digits 0-4, four cut to 40 (tests/gans/test_diffusion_digits.py's fixture, prepared once under `--data`)
-> train_diffusion with params.demo.yaml's train_diffusion but for the `--set key=value` overrides (values
in YAML) -> per `--sample sampler:steps:guidance`, `--samples` images per digit from the gate's noise
(seed 100 + digit; the gate reads the first 100) -> the reader's share read as intended, per digit, on
all of them and on the gate's 100, what the misread ones were read as, and a grid of the first 20 per
digit (<out>/samples_<setting>.png, a row per digit). `--model DIR` re-samples a trained model instead.
Prints and writes <out>/digits.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DIGITS = range(5)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path("/tmp/cxraug-digits"), help="prepared digits (cache)")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="train_diffusion override"
    )
    ap.add_argument("--sample", action="append", default=[], metavar="SAMPLER:STEPS:GUIDANCE")
    ap.add_argument("--samples", type=int, default=200, help="images per digit")
    ap.add_argument("--model", type=Path, default=None, help="a trained model dir: sample only")
    args = ap.parse_args()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from cxraug.core.config import PrepareParams, TrainDiffusionParams
    from cxraug.data.prepare import prepare
    from cxraug.gans.diffusion.proposer import load_proposer
    from cxraug.gans.diffusion.train import train_diffusion
    from tests.fixtures_digits import DIGIT_NAMES, DigitReader, class_names, write_digits_nih

    prepared = args.data / "prepared"
    if not prepared.is_dir():
        raw = write_digits_nih(args.data / "raw", DIGITS, rare=4, rare_n=40, size=64)
        prepare(
            PrepareParams(classes=class_names(DIGITS), image_size=64), raw, prepared, args.data / "p.json"
        )

    result: dict = {"overrides": args.set}
    model = args.model
    if model is None:
        demo = yaml.safe_load((REPO / "params.demo.yaml").read_text())["train_diffusion"]
        overrides = dict(kv.split("=", 1) for kv in args.set)
        params = TrainDiffusionParams(
            **{
                **demo,
                "device": "cpu",
                "precision": "fp32",
                **{k: yaml.safe_load(v) for k, v in overrides.items()},
            }
        )
        model = out / "model"
        start = time.perf_counter()
        trained = train_diffusion(params, prepared, model, out / "train.json", out / "ckpt")
        result["train"] = {
            "params": params.model_dump(),
            "seconds": round(time.perf_counter() - start, 1),
            "steps": trained.steps,
            "steps_per_second": round(trained.steps_per_second, 3),
            "val_loss": trained.summary.get("val_loss"),
        }
        print(json.dumps(result["train"]), flush=True)

    reader = DigitReader(DIGITS)
    proposer = load_proposer(model, torch.device("cpu"))
    settings = args.sample or [
        f"{proposer.sampling.sampler}:{proposer.sampling.steps}:{proposer.sampling.guidance}"
    ]
    result["sampling"] = {}
    for setting in settings:
        name, steps, guidance = setting.split(":")
        p = proposer.with_sampling(sampler=name, steps=int(steps), guidance=float(guidance))
        start, per_digit, rows = time.perf_counter(), {}, []
        for d in DIGITS:
            images = p.propose(d, args.samples, torch.Generator().manual_seed(100 + d))[0].numpy()
            read = reader.read(images)
            rows.append(np.concatenate(list(images[:20]), 1))
            per_digit[DIGIT_NAMES[d]] = {
                "read_as_intended": round(float((read == d).mean()), 3),
                "gate_100": round(float((read[:100] == d).mean()), 3),
                "read_as": np.bincount(read, minlength=len(DIGITS)).tolist(),
            }
        seconds = time.perf_counter() - start
        Image.fromarray(np.concatenate(rows, 0)).save(out / f"samples_{setting.replace(':', '_')}.png")
        result["sampling"][setting] = {
            "per_digit": per_digit,
            "images_per_second": round(args.samples * len(DIGITS) / seconds, 2),
        }
        short = {k: (v["read_as_intended"], v["gate_100"]) for k, v in per_digit.items()}
        print(setting, json.dumps(short), f"{seconds:.0f} s", flush=True)
    (out / "digits.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
