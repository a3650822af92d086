"""Measure BAGAN on the digits fixture (not collected by pytest: minutes long).

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.bagan_digits_quality --out /tmp/b --cov oas

prepare (digits 0-4, four cut to 40) -> train_bagan (params.yaml defaults but for the overrides given
here) -> per digit, n candidates from the class Gaussian through (a) the trained autoencoder's decoder
(the latent estimate alone, before any GAN step) and (b) the final generator: the reader's share read
as intended, improved P/R (k=3) on 8x8 pixels, and the share of (b) that BAGAN's filter (D's softmax
probability of the digit >= 0.5) passes; plus D on the real validation images of every digit (accuracy,
one-vs-rest AUC of its class probability). Prints and writes <out>/bagan_<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tag", default="")
    ap.add_argument("--cov", default="sample", choices=["sample", "ledoit_wolf", "oas", "diagonal"])
    ap.add_argument("--ridge", type=float, default=None)
    ap.add_argument("--sampling", default="uniform", choices=["uniform", "rebalance"])
    ap.add_argument("--d-weight", default="none", choices=["none", "balanced"])
    ap.add_argument("--lr-d", type=float, default=None)
    ap.add_argument("--latent-dim", type=int, default=100)
    ap.add_argument("--width", type=int, default=16, help="g_base = d_base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--ae-epochs", type=int, default=15)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--rare-n", type=int, default=40)
    ap.add_argument("--samples", type=int, default=200)
    args = ap.parse_args()

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    from sklearn.metrics import roc_auc_score

    from cxraug.core.config import PrepareParams, load_params
    from cxraug.core.runtime import safe_load
    from cxraug.data.datasets import load_split, to_model_range, to_uint8
    from cxraug.data.prepare import prepare
    from cxraug.gans.bagan.nets import Architecture, Generator
    from cxraug.gans.bagan.proposer import load_proposer
    from cxraug.gans.bagan.train import train_bagan
    from tests.fixtures_digits import DigitReader, class_names, digit_report, write_digits_nih

    digits = [0, 1, 2, 3, 4]
    raw, prepared = out / "raw", out / "prepared"
    if not raw.is_dir():
        write_digits_nih(raw, digits, 4, args.rare_n)
    if not prepared.is_dir():
        prepare(
            PrepareParams(classes=class_names(digits), image_size=64), raw, prepared, out / "prepare.json"
        )
    defaults = load_params(Path(__file__).resolve().parents[1] / "params.yaml").train_bagan
    overrides = {
        "latent_dim": args.latent_dim,
        "g_base": args.width,
        "d_base": args.width,
        "batch_size": args.batch,
        "ae_epochs": args.ae_epochs,
        "epochs": args.epochs,
        "cov_estimator": args.cov,
        "class_sampling": args.sampling,
        "d_class_weight": args.d_weight,
        "precision": "fp32",
        "device": "cpu",
        "checkpoint_every": 100_000,
    }
    if args.lr_d is not None:
        overrides["lr_d"] = args.lr_d
    if args.ridge is not None:
        overrides["cov_ridge"] = args.ridge
    params = defaults.model_copy(update=overrides)
    tag = args.tag or f"{args.cov}_{args.sampling}_{args.d_weight}"
    start, cpu = time.perf_counter(), time.process_time()
    model = out / f"model_{tag}"
    result = train_bagan(params, prepared, model, out / f"{tag}.json", out / f"ckpt_{tag}")
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu

    reader = DigitReader(digits)
    proposer = load_proposer(model, torch.device("cpu"))
    arch = Architecture(**json.loads((model / "bagan.json").read_text())["architecture"])
    decoder = Generator(arch)
    decoder.load_state_dict(safe_load(model / "autoencoder.pt")["decoder"])
    decoder.eval()
    sampler = proposer.sampler
    decoded, generated, passed = {}, {}, {}
    for c, digit in enumerate(digits):
        images, scores = proposer.propose(c, args.samples, torch.Generator().manual_seed(100 + c))
        generated[digit], passed[digit] = images.numpy(), float((scores >= 0.5).float().mean())
        z = sampler(torch.full((args.samples,), c), torch.Generator().manual_seed(100 + c))
        with torch.no_grad():
            decoded[digit] = to_uint8(decoder(z)).numpy()
    val = load_split(prepared, "val")
    with torch.no_grad():
        probs = proposer.discriminator(to_model_range(val.images)).softmax(1).numpy()
    labels = val.labels.numpy()
    d_val = {
        str(d): {
            "accuracy": round(float((probs[labels == c].argmax(1) == c).mean()), 3),
            "auc": round(float(roc_auc_score(labels == c, probs[:, c])), 3),
        }
        for c, d in enumerate(digits)
    }
    report = {
        "settings": {k: params.model_dump()[k] for k in overrides} | {"cov_ridge": params.cov_ridge},
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "metrics": {k: v for k, v in result.metrics.items() if k.startswith(("gan", "ae", "val"))},
        "decoder_from_gaussian": digit_report(decoded, reader),
        "generator": digit_report(generated, reader),
        "filter_pass": {str(d): round(v, 3) for d, v in passed.items()},
        "d_on_val": d_val,
    }
    (out / f"bagan_{tag}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
