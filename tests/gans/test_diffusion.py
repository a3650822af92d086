"""The diffusion generator: class conditioning and guidance, training with resume, tracking, the Proposer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from cxraug.core.config import PrepareParams, SamplerParams, SynthesizeParams, TrainDiffusionParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import pick_precision, safe_load
from cxraug.core.stage import Hooks
from cxraug.gans import registry
from cxraug.gans.diffusion.nets import EMA, Architecture, build_unet, guided_noise, sample
from cxraug.gans.diffusion.proposer import DiffusionProposer, Sampling, load_proposer
from cxraug.gans.diffusion.train import train_diffusion
from cxraug.stages.synthesize import run_synthesize
from cxraug.synthesis.draw import synthesize
from cxraug.synthesis.files import read_png
from tests.helpers import project_env

TINY = TrainDiffusionParams(
    resolution=16,
    widths=[8, 16],
    layers_per_block=1,
    attention=False,
    train_timesteps=100,
    epochs=2,
    steps_per_epoch=4,
    batch_size=16,
    lr=1e-3,
    warmup_steps=2,
    ema_decay=0.9,
    sampler_steps=4,
    sample_batch_size=64,
    grid_per_class=2,
    log_every=1,
    checkpoint_every=3,
    device="cpu",
    precision="fp32",
)
ARCH = Architecture(32, 16, 5, (8, 16), 1, False, 100, "squaredcos_cap_v2")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def prepared(demo_raw, tmp_path_factory, tracking_uri) -> Path:
    from cxraug.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared")
    prepare(PrepareParams(image_size=32), demo_raw, out, out / "prepare.json")
    return out


def _train(prepared: Path, root: Path, params: TrainDiffusionParams = TINY, on_step=None):
    hooks = Hooks(on_step=on_step)
    return train_diffusion(params, prepared, root / "models", root / "metrics.json", root / "ckpt", hooks)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion")
    return root, _train(prepared, root)


def _proposer(guidance: float, unet=None) -> DiffusionProposer:
    torch.manual_seed(0)
    unet = unet or build_unet(ARCH)
    with torch.no_grad():  # a visible class embedding: diffusers' default init is small next to the time one
        unet.class_embedding.weight.mul_(10)
    classes = tuple(f"c{i}" for i in range(5))
    precision = pick_precision(torch.device("cpu"), "fp32")
    return DiffusionProposer(unet.eval(), ARCH, classes, Sampling("ddim", 3, guidance), precision)


# ------------------------------------------------------------------------------ conditioning, guidance


def test_the_class_label_conditions_the_noise_prediction_and_the_null_label_is_its_own_branch():
    unet = _proposer(1.0).unet
    x, t = torch.randn(1, 1, 16, 16).expand(6, -1, -1, -1), torch.full((6,), 50)
    with torch.no_grad():
        eps = unet(x, t, class_labels=torch.arange(6)).sample  # classes 0..4, then the null label 5
    gaps = torch.cdist(eps.flatten(1), eps.flatten(1))
    assert (gaps + torch.eye(6) * 1e9).min() > 1e-3, "same noise, different label -> different prediction"
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        unconditional = guided_noise(unet, x[:2], t[:2], labels, ARCH.null_label, 0.0)
        conditional = guided_noise(unet, x[:2], t[:2], labels, ARCH.null_label, 1.0)
        guided = guided_noise(unet, x[:2], t[:2], labels, ARCH.null_label, 3.0)
    torch.testing.assert_close(unconditional, eps[[5, 5]])
    torch.testing.assert_close(conditional, eps[[0, 3]])
    torch.testing.assert_close(guided, eps[[5, 5]] + 3.0 * (eps[[0, 3]] - eps[[5, 5]]), atol=1e-5, rtol=1e-5)


def test_guidance_zero_samples_the_unconditional_model_whatever_the_class():
    noise = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1)).expand(3, -1, -1, -1)
    labels = torch.tensor([0, 2, 4])
    unguided = _proposer(0.0).generate(labels, noise)
    null = _proposer(1.0).generate(torch.full((3,), ARCH.null_label), noise)
    torch.testing.assert_close(unguided, null)
    assert torch.equal(unguided[0], unguided[2]), "w = 0 ignores the class"
    conditional = _proposer(1.0).generate(labels, noise)
    assert (conditional[0] - conditional[2]).abs().max() > 1e-3, "w = 1: same noise, other class, other image"
    assert unguided.shape == (3, 1, 32, 32) and unguided.abs().max() <= 1  # upsampled to image_size


def test_sampling_is_deterministic_given_the_noise_for_both_samplers():
    unet = build_unet(ARCH).eval()
    noise, labels = torch.randn(2, 1, 16, 16), torch.tensor([1, 2])
    for sampler in ("ddim", "dpm_solver"):
        a = sample(unet, ARCH, labels, noise, sampler, 3, 2.0)
        torch.testing.assert_close(a, sample(unet, ARCH, labels, noise, sampler, 3, 2.0))


def test_ema_follows_the_weights_with_warm_up():
    live = torch.nn.Linear(2, 2)
    ema = EMA(live, decay=0.99)
    before = ema.model.weight.detach().clone()
    with torch.no_grad():
        live.weight.add_(1.0)
    ema.update(live)  # decay_1 = min(0.99, 2 / 11)
    torch.testing.assert_close(ema.model.weight, before + (1 - 2 / 11) * 1.0)
    assert not ema.model.weight.requires_grad


# ------------------------------------------------------------------------------------------ training


def test_tiny_run_writes_outputs_metrics_and_an_mlflow_run(trained):
    root, result = trained
    assert {p.name for p in (root / "models").iterdir()} == {"unet.pt", "diffusion.json", "recipe.json"}
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["steps"] == 8 and metrics["mlflow_run_id"] == result.run_id
    assert metrics["val_loss"] > 0 and metrics["sampler_images_per_second"] > 0
    assert not (root / "ckpt" / "state.pt").exists(), "a finished stage leaves no checkpoint behind"
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["dvc.stage"] == "train_diffusion"
    assert [m.step for m in client.get_metric_history(result.run_id, "loss")] == list(range(1, 9))
    artifacts = [a.path for a in client.list_artifacts(result.run_id, "images")]
    artifacts += [a.path for a in client.list_artifacts(result.run_id)]
    per_epoch = [a for a in artifacts if "samples~by_class+step" in a and a.endswith(".png")]
    assert len(per_epoch) == 3  # a square card grid (a row per class) at step 0 and after each of 2 epochs
    assert "samples/by_class_final.png" in [a.path for a in client.list_artifacts(result.run_id, "samples")]


class Kill:
    def __init__(self, step: int) -> None:
        self.step, self.seen = step, []

    def __call__(self, phase: str, step: int, nets) -> None:
        self.seen.append((phase, step))
        if step == self.step:
            raise KeyboardInterrupt


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_does(
    trained, prepared, tmp_path
):
    reference_root, reference = trained
    with pytest.raises(KeyboardInterrupt):
        _train(prepared, tmp_path, on_step=Kill(5))  # checkpoint_every=3: steps 4, 5 are redone
    saved = safe_load(tmp_path / "ckpt" / "state.pt")
    assert saved["step"] == 3
    again = Kill(-1)
    result = _train(prepared, tmp_path, on_step=again)
    assert again.seen[0] == ("diffusion", 4) and result.resumed_from == 3
    assert result.run_id == saved["run_id"], "a resumed stage continues the same MLflow run"
    ours, theirs = (
        safe_load(tmp_path / "models" / "unet.pt"),
        safe_load(reference_root / "models" / "unet.pt"),
    )
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


# ------------------------------------------------------------------------------------------ proposer


def test_proposer_keeps_every_candidate_and_draws_the_same_images_from_the_same_generator(trained):
    root, _ = trained
    proposer = registry.load_proposer("diffusion", root / "models", torch.device("cpu"))
    assert proposer.classes == tuple(json.loads((root / "models" / "diffusion.json").read_text())["classes"])
    images, scores = proposer.propose(2, 5, torch.Generator().manual_seed(3))
    again, _ = proposer.propose(2, 5, torch.Generator().manual_seed(3))
    assert images.dtype == torch.uint8 and images.shape == (5, 32, 32) and torch.equal(images, again)
    assert torch.equal(scores, torch.ones(5)), "no discriminator: synthesis keeps every candidate"
    with pytest.raises(CxraugError, match="out of range"):
        proposer.propose(5, 1, torch.Generator())


def test_load_proposer_without_a_trained_model_is_a_one_line_error(tmp_path):
    with pytest.raises(CxraugError, match="run `cxraug train-diffusion`"):
        load_proposer(tmp_path, torch.device("cpu"))


@pytest.mark.slow  # ~40 s: a fresh interpreter, diffusers and a new MLflow store
def test_the_cli_trains_and_reports_the_rates(prepared, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "train_diffusion:\n"
        + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in TINY.model_dump().items() if k != "epochs")
        + "  epochs: 1\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "cxraug.cli", "train-diffusion", "--params", str(params),
         "--prepared", str(prepared), "--out", str(tmp_path / "m"), "--metrics", str(tmp_path / "m.json"),
         "--checkpoints", str(tmp_path / "c")],
        capture_output=True, text=True, cwd=tmp_path, env=project_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "diffusion: 4 steps" in out.stdout and "img/s" in out.stdout
    assert (tmp_path / "m" / "unet.pt").is_file() and (tmp_path / "mlruns").is_dir()


def test_synthesis_keeps_every_diffusion_candidate_whatever_the_threshold(trained):
    root, _ = trained
    proposer = registry.load_proposer("diffusion", root / "models", torch.device("cpu"))
    draws = synthesize(proposer, 3, 1.0, 1.0, 8, torch.Generator().manual_seed(0))
    assert [(d.accepted, d.tried) for d in draws] == [(3, 3)] * len(proposer.classes)


def test_synthesize_sampler_overrides_the_trained_sampler_without_retraining(trained, tmp_path):
    """synthesize.sampler (guidance 0, 2 steps) is what synthesis samples with: its images equal the
    trained model's under exactly those settings, its metrics say so, and the model files are untouched."""
    root, _ = trained
    model_files = {p.name: p.read_bytes() for p in (root / "models").iterdir() if p.is_file()}
    params = SynthesizeParams(
        n_per_class=[2], batch_size=8, device="cpu", precision="fp32",
        sampler=SamplerParams(steps=2, guidance_scale=0.0),
    )  # fmt: skip
    run_synthesize(params, "diffusion", root / "models", tmp_path / "out", tmp_path / "m.json")
    recorded = json.loads((tmp_path / "m.json").read_text())["sampler"]
    trained_with = json.loads((root / "models" / "diffusion.json").read_text())["sampling"]
    assert recorded == {**trained_with, "steps": 2, "guidance": 0.0} != trained_with
    expected = registry.load_proposer("diffusion", root / "models", torch.device("cpu"), "fp32")
    expected = expected.with_sampling(steps=2, guidance=0.0)
    draws = synthesize(expected, 2, 0.0, 1.0, 8, torch.Generator().manual_seed(params.seed))
    index = pd.read_csv(tmp_path / "out" / "index.csv")
    assert len(index) == 2 * len(draws)
    for label, rows in index.groupby("label"):
        written = torch.stack([torch.as_tensor(read_png(tmp_path / "out" / f)) for f in rows["file"]])
        assert torch.equal(written, draws[label].images), label
    assert {p.name: p.read_bytes() for p in (root / "models").iterdir() if p.is_file()} == model_files
