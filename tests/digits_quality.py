"""Measure NewGAN on the digits fixture through its stages (not collected by pytest: minutes long).

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.digits_quality --generator residual --out /tmp/d

prepare -> train_embedder -> train_opengan (the params.yaml defaults of train_opengan but for the
overrides given here: widths, schedule, generator, any other key with --set) -> load_proposer -> n
unfiltered samples per digit -> the reader's share read as intended and improved P/R (k=3) on 8x8
pixels, per digit. Optionally one digit is held out of embedder and GAN (`--held-out`) and drawn from
`--exemplars` of its real images. Prints and writes <out>/digits_<generator><tag>.json.
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--generator", default="residual", choices=["residual", "dcgan"])
    ap.add_argument("--consistency", default=None, choices=["mse", "cosine"])
    ap.add_argument("--consistency-weight", type=float, default=None)
    ap.add_argument("--lr", type=float, default=None, help="lr_g = lr_d")
    ap.add_argument("--beta1", type=float, default=None)
    ap.add_argument("--tag", default="", help="suffix of the output names")
    ap.add_argument("--digits", default="0,1,2,3,4")
    ap.add_argument("--rare", type=int, default=4, help="digit cut to --rare-n images; -1: none")
    ap.add_argument("--rare-n", type=int, default=40)
    ap.add_argument("--held-out", type=int, default=None, help="digit left out of embedder and GAN")
    ap.add_argument("--exemplars", type=int, default=40)
    ap.add_argument("--width", type=int, default=16, help="g_base = d_base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--embedder-epochs", type=int, default=10)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other train_opengan key (VALUE read as YAML), e.g. --set lr_d=4e-4 --set projection=false",
    )
    ap.add_argument(
        "--embedder-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a train_embedder key, e.g. --embedder-set temperature=0.5 (its own embedder file)",
    )
    args = ap.parse_args()

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    os.chdir(out)  # MLflow's artifacts (mlruns/) beside its store, not in the caller's directory
    from cxraug.core.config import PrepareParams, TrainEmbedderParams, load_params
    from cxraug.data.datasets import load_split
    from cxraug.data.prepare import prepare
    from cxraug.gans.opengan.proposer import load_exemplar_proposer, load_proposer
    from cxraug.gans.opengan.train import train_opengan
    from cxraug.gans.opengan.train_embedder import train_embedder
    from tests.fixtures_digits import DIGIT_NAMES, DigitReader, class_names, digit_report, write_digits_nih

    digits = [int(d) for d in args.digits.split(",")]
    raw = out / "raw"
    if not raw.is_dir():
        write_digits_nih(raw, digits, None if args.rare < 0 else args.rare, args.rare_n)
    prepared = out / "prepared"
    if not prepared.is_dir():
        prepare(
            PrepareParams(classes=class_names(digits), image_size=64), raw, prepared, out / "prepare.json"
        )
    excluded = [] if args.held_out is None else [DIGIT_NAMES[args.held_out]]
    tag = f"{args.generator}" + (f"_heldout{args.held_out}" if excluded else "") + args.tag
    start = time.perf_counter()
    embedder_overrides = {k: yaml.safe_load(v) for k, _, v in (i.partition("=") for i in args.embedder_set)}
    suffix = "".join(f"_{k}{v}" for k, v in embedder_overrides.items())
    embedder = out / f"embedder{'_' + excluded[0] if excluded else ''}{suffix}.pt"
    if not embedder.is_file():
        e = TrainEmbedderParams(
            epochs=args.embedder_epochs,
            batch_size=64,
            d_base=16,
            embed_dim=64,
            precision="fp32",
            exclude_classes=excluded,
            **embedder_overrides,
        )
        train_embedder(e, prepared, embedder, out / f"{tag}_e.json", out / f"ckpt_e_{tag}")
    t_embedder = time.perf_counter() - start
    defaults = load_params(Path(__file__).resolve().parents[1] / "params.yaml").train_opengan
    overrides = {
        "generator": args.generator,
        "g_base": args.width,
        "d_base": args.width,
        "batch_size": args.batch,
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "precision": "fp32",
        "device": "cpu",
        "checkpoint_every": 10_000,
    }
    if args.consistency:
        overrides["consistency"] = args.consistency
    if args.lr is not None:
        overrides |= {"lr_g": args.lr, "lr_d": args.lr}
    if args.beta1 is not None:
        overrides["beta1"] = args.beta1
    if args.consistency_weight is not None:
        overrides["consistency_weight"] = args.consistency_weight
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    gan = type(defaults).model_validate(defaults.model_dump() | overrides)
    result = train_opengan(
        gan, prepared, embedder, out / f"gan_{tag}", out / f"{tag}_g.json", out / f"ckpt_g_{tag}"
    )
    t_gan = result.seconds

    reader = DigitReader(digits)
    proposer = load_proposer(out / f"gan_{tag}", torch.device("cpu"))
    samples = {}
    for c, digit in enumerate(digits):
        if DIGIT_NAMES[digit] in excluded:
            train = load_split(prepared, "train")
            exemplars = train.images[train.labels == c][: args.exemplars]
            unseen = load_exemplar_proposer(
                out / f"gan_{tag}", exemplars, DIGIT_NAMES[digit], torch.device("cpu")
            )
            images, _ = unseen.propose(0, args.samples, torch.Generator().manual_seed(100 + c))
        else:
            images, _ = proposer.propose(c, args.samples, torch.Generator().manual_seed(100 + c))
        samples[digit] = images.numpy()
    report = {
        "settings": {
            **gan.model_dump(
                include=set(overrides)
                | {"consistency", "consistency_weight", "lr_g", "lr_d", "beta1", "projection"}
            ),
            "digits": digits,
            "rare": args.rare,
            "rare_n": args.rare_n,
            "held_out": args.held_out,
            "embedder": embedder_overrides,
        },
        "steps": result.steps,
        "gan_seconds": round(t_gan, 1),
        "steps_per_second": round(result.steps_per_second, 3),
        "embedder_seconds": round(t_embedder, 1),
        "per_digit": digit_report(samples, reader),
    }
    np.savez_compressed(out / f"samples_{tag}.npz", **{str(k): v[:64] for k, v in samples.items()})
    (out / f"digits_{tag}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
