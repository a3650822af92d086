"""BAGAN's autoencoder phase alone, per seed, with the diagnostics of its convergence (not collected by
pytest: ~30 s a seed at 1 thread). Prepared data: the digits fixture of tests/bagan_digits_quality.py.

    PYTHONPATH=src OMP_NUM_THREADS=1 python -m tests.bagan_autoencoder_seeds --prepared /tmp/b/prepared \
        --seeds 0 1 2 3 4 --encoder-init dcgan

Per epoch: mean training MSE, validation MSE (eval mode, as train_bagan reports it), the codes' std, the
share of dead ReLU channels per decoder block (never positive on the validation images), the share of
saturated tanh outputs (|x| > 0.99) and the reconstructions' variance across images over the data's (near
1: the decoder follows its input; well below: it draws a few fixed shapes). `--encoder-init dcgan` rebuilds
the encoder and decoder as before the He init (the same draws of the global generator); `--warmup N`
ramps lr_ae linearly over the first N steps. The batches and settings are train_bagan's (gate size).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from cxraug.core.config import load_params
from cxraug.core.runtime import seed_everything
from cxraug.core.training import adam, evaluating, phase_epoch_batches
from cxraug.data.datasets import load_split, to_model_range
from cxraug.gans.bagan.losses import reconstruction_loss
from cxraug.gans.bagan.nets import Architecture, ConvNet, Generator, encoder


def run(prepared: Path, seed: int, init: str, warmup: int, epochs: int) -> list[dict]:
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml").train_bagan
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    seed_everything(seed)
    arch = Architecture(train.image_size, 100, 16, 16, params.d_dropout, train.n_classes)
    enc = ConvNet(arch, arch.latent_dim) if init == "dcgan" else encoder(arch)  # BaganNets.build's order
    dec = Generator(arch)
    opt = adam([*enc.parameters(), *dec.parameters()], torch.device("cpu"), params.lr_ae, (0.5, 0.999))
    x_train, x_val = to_model_range(train.images), to_model_range(val.images)
    seen: dict[str, torch.Tensor] = {}
    for i, block in enumerate(dec.body[:-1]):
        block.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(f"up{i}", out))
    dec.project.register_forward_hook(lambda m, a, out: seen.__setitem__("dense", out))

    def check(epoch: int, train_mse: float | None) -> dict:
        with evaluating(enc, dec), torch.no_grad():
            codes = enc(x_val)
            rec = dec(codes)
        dead = {k: round(float((v.amax(dim=(0, 2, 3)) <= 0).float().mean()), 3) for k, v in seen.items()}
        return {
            "epoch": epoch,
            "train_mse": train_mse,
            "val_mse": round(reconstruction_loss(rec, x_val).item(), 4),
            "code_std": round(codes.std().item(), 4),
            "dead_relu": dead,
            "tanh_saturated": round(float((rec.abs() > 0.99).float().mean()), 4),
            "recon_var_over_data_var": round(rec.var(0).mean().item() / x_val.var(0).mean().item(), 3),
        }

    rows, step = [check(0, None)], 0
    for epoch in range(epochs):
        losses = []
        for idx in phase_epoch_batches(len(train), 32, seed, 0, epoch, x_train.device):
            for group in opt.param_groups:
                group["lr"] = params.lr_ae * min(1.0, (step + 1) / warmup) if warmup else params.lr_ae
            opt.zero_grad(set_to_none=True)
            loss = reconstruction_loss(dec(enc(x_train[idx])), x_train[idx])
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
        rows.append(check(epoch + 1, round(sum(losses) / len(losses), 4)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prepared", type=Path, required=True)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--encoder-init", choices=["he", "dcgan"], default="he")
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=15)
    args = ap.parse_args()
    for seed in args.seeds:
        rows = run(args.prepared, seed, args.encoder_init, args.warmup, args.epochs)
        print(json.dumps({"seed": seed, "init": args.encoder_init, "warmup": args.warmup, "epochs": rows}))
        print(f"seed {seed}: val MSE after {args.epochs} epochs {rows[-1]['val_mse']}", flush=True)


if __name__ == "__main__":
    main()
