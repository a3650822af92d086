"""Measure BAGAN on the digits fixture (not collected by pytest: minutes long).

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.bagan_digits_quality --out /tmp/b --cov oas

prepare (digits 0-4, four cut to 40) -> train_bagan (params.yaml defaults but for the overrides given
here) -> per digit, n candidates from the class Gaussian through (a) the trained autoencoder's decoder
(the latent estimate alone, before any GAN step) and (b) the final generator: the reader's share read
as intended, improved P/R (k=3) on 8x8 pixels, and the share of (b) that BAGAN's filters pass (D's
softmax probability of the digit >= 0.5; `argmax`: D's top of its K+1 outputs is the digit, the study's
rule, synthesize.filter.per_gan.bagan); (c) the first n candidates that pass `argmax`, in draw order (what
`synthesize` keeps); plus D on the real validation images of every digit (accuracy, one-vs-rest AUC of its
class probability). `--curve` adds (b), (c) and the pass rates after every GAN epoch (`curve`).
Prints and writes <out>/bagan_<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tag", default="")
    ap.add_argument("--cov", default=None, choices=["sample", "ledoit_wolf", "oas", "diagonal"])
    ap.add_argument("--ridge", type=float, default=None)
    ap.add_argument("--sampling", default=None, choices=["uniform", "rebalance"])
    ap.add_argument("--d-weight", default=None, choices=["none", "balanced"])
    ap.add_argument("--lr-d", type=float, default=None)
    ap.add_argument("--lr-g", type=float, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any train_bagan key")
    ap.add_argument("--curve", action="store_true", help="judge the samples after every GAN epoch")
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
    from cxraug.core.stage import Hooks
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
        "precision": "fp32",
        "device": "cpu",
        "checkpoint_every": 100_000,
    }
    chosen = {"cov_estimator": args.cov, "class_sampling": args.sampling, "d_class_weight": args.d_weight}
    overrides |= {k: v for k, v in chosen.items() if v is not None}  # None: params.yaml's
    if args.lr_d is not None:
        overrides["lr_d"] = args.lr_d
    if args.lr_g is not None:
        overrides["lr_g"] = args.lr_g
    overrides |= {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    if args.ridge is not None:
        overrides["cov_ridge"] = args.ridge
    params = defaults.model_copy(update=overrides)
    tag = args.tag or f"{params.cov_estimator}_{params.class_sampling}_{params.d_class_weight}"
    start, cpu = time.perf_counter(), time.process_time()
    model = out / f"model_{tag}"
    reader = DigitReader(digits)
    curve = []

    def judge_epoch(end) -> None:
        if end.phase == "gan":
            curve.append({"epoch": end.epoch, **judge(end.proposer, digits, reader, args.samples, 4)})
            print(json.dumps(curve[-1]), flush=True)

    hooks = Hooks(on_epoch=judge_epoch if args.curve else None)
    result = train_bagan(params, prepared, model, out / f"{tag}.json", out / f"ckpt_{tag}", hooks)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu

    proposer = load_proposer(model, torch.device("cpu"))
    arch = Architecture(**json.loads((model / "bagan.json").read_text())["architecture"])
    decoder = Generator(arch)
    decoder.load_state_dict(safe_load(model / "autoencoder.pt")["decoder"])
    decoder.eval()
    sampler = proposer.sampler
    decoded = {}
    for c, digit in enumerate(digits):
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
        "settings": params.model_dump(),
        "seconds": round(seconds, 1),
        "cpu_seconds": round(cpu_seconds, 1),
        "metrics": {k: v for k, v in result.metrics.items() if k.startswith(("gan", "ae", "val"))},
        "decoder_from_gaussian": digit_report(decoded, reader),
        **judge(proposer, digits, reader, args.samples),
        "d_on_val": d_val,
        "curve": curve,
    }
    (out / f"bagan_{tag}.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


def judge(proposer, digits, reader, n: int, tries: int = 10) -> dict:
    """Per digit, from candidates drawn in order (seed 100 + class): the first n unfiltered ("generator"),
    the first n that pass argmax ("argmax_kept", fewer if tries x n candidates do not give n), and the
    shares of candidates that pass argmax and D's probability >= 0.5."""
    from tests.fixtures_digits import digit_report

    generated, kept, argmax_pass, threshold_pass = {}, {}, {}, {}
    for c, digit in enumerate(digits):
        images, scores, top = proposer.propose_ranked(c, tries * n, torch.Generator().manual_seed(100 + c))
        generated[digit] = images[:n].numpy()
        kept[digit] = images[top][:n].numpy()
        argmax_pass[digit], threshold_pass[digit] = (
            float(top.float().mean()),
            float((scores >= 0.5).float().mean()),
        )
    return {
        "generator": digit_report(generated, reader),
        "argmax_kept": digit_report({d: v for d, v in kept.items() if len(v) > 3}, reader),
        "argmax_pass": {str(d): round(v, 3) for d, v in argmax_pass.items()},
        "filter_pass": {str(d): round(v, 3) for d, v in threshold_pass.items()},
    }


if __name__ == "__main__":
    main()
