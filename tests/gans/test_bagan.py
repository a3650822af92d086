"""BAGAN: losses, class Gaussians, initialisation from the autoencoder, resume, tracking, the Proposer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cxraug.core.config import PrepareParams, TrainBaganParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import safe_load
from cxraug.core.stage import Hooks
from cxraug.data.datasets import load_split, to_model_range, to_uint8
from cxraug.gans.bagan.latent import ClassGaussians, LatentSampler, class_probabilities, fit_class_gaussians
from cxraug.gans.bagan.losses import discriminator_loss, generator_loss
from cxraug.gans.bagan.nets import Architecture, BaganNets, init_gan_from_autoencoder
from cxraug.gans.bagan.proposer import load_proposer
from cxraug.gans.bagan.steps import fakes_per_step
from cxraug.gans.bagan.train import fingerprint, train_bagan
from tests.helpers import project_env

TINY = TrainBaganParams(
    latent_dim=12,
    g_base=8,
    d_base=8,
    ae_epochs=1,
    epochs=2,
    batch_size=32,
    grid_per_class=2,
    log_every=1,
    checkpoint_every=4,
    device="cpu",
    precision="fp32",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny convs on a shared 2-core machine: one thread is ~10x faster than two fighting other jobs."""
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


def _train(prepared: Path, root: Path, params: TrainBaganParams = TINY, on_step=None):
    hooks = Hooks(on_step=on_step)
    return train_bagan(params, prepared, root / "models", root / "metrics.json", root / "checkpoints", hooks)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory, tracking_uri):
    root = tmp_path_factory.mktemp("bagan")
    return root, _train(prepared, root)


# ------------------------------------------------------------------------------------------ losses


def test_discriminator_loss_targets_real_class_and_fake_class_k():
    k = 4
    torch.manual_seed(0)
    logits_real, logits_fake = torch.randn(6, k + 1), torch.randn(3, k + 1)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    expected = F.cross_entropy(
        torch.cat([logits_real, logits_fake]), torch.tensor([0, 1, 2, 3, 0, 1, 4, 4, 4])
    )
    assert torch.allclose(discriminator_loss(logits_real, labels, logits_fake), expected)

    confident = 30.0 * F.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), k + 1).float()
    fakes_at_k = 30.0 * F.one_hot(torch.full((3,), k), k + 1).float()
    fakes_at_0 = 30.0 * F.one_hot(torch.zeros(3, dtype=torch.long), k + 1).float()
    assert discriminator_loss(confident, labels, fakes_at_k) < 1e-6
    assert discriminator_loss(confident, labels, fakes_at_0) > 5


def test_generator_loss_targets_the_sampled_class_not_fake():
    k, sampled = 3, torch.tensor([2, 0, 1, 2])
    logits = torch.randn(4, k + 1)
    assert torch.allclose(generator_loss(logits, sampled), F.cross_entropy(logits, sampled))
    assert generator_loss(30.0 * F.one_hot(sampled, k + 1).float(), sampled) < 1e-6
    taken_as_fake = 30.0 * F.one_hot(torch.full((4,), k), k + 1).float()
    assert generator_loss(taken_as_fake, sampled) > 5


def test_discriminator_sees_about_one_class_share_of_generated_images():
    assert fakes_per_step(64, 5) == 13
    assert fakes_per_step(10, 4) == 3


def test_class_sampling_uniform_and_rebalance():
    counts = torch.tensor([70, 20, 10])
    assert torch.allclose(class_probabilities(counts, "uniform"), torch.full((3,), 1 / 3))
    p = class_probabilities(counts, "rebalance")
    # max(2/3 - share, 0): the majority class (70%) is not generated, the rarest most often
    expected = np.array([0.0, 2 / 3 - 0.2, 2 / 3 - 0.1])
    assert np.allclose(p.numpy(), expected / expected.sum(), atol=1e-6)
    assert torch.allclose(class_probabilities(torch.tensor([5, 5]), "rebalance"), torch.tensor([0.5, 0.5]))


# ------------------------------------------------------------------------------------ class Gaussians


def test_fit_class_gaussians_equals_numpy_and_is_positive_definite():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(60, 10))
    labels = np.repeat([0, 1, 2], [40, 15, 5])  # class 2 has fewer images than dimensions: singular
    g = fit_class_gaussians(latents, labels, ("a", "b", "c"), ridge=1e-3)
    for c in range(3):
        codes = latents[labels == c]
        assert np.allclose(g.means[c], codes.mean(axis=0))
        assert np.allclose(g.covariances[c] - g.ridges[c] * np.eye(10), np.cov(codes, rowvar=False))
        assert np.linalg.eigvalsh(g.covariances[c]).min() > 0
    assert np.linalg.matrix_rank(np.cov(latents[labels == 2], rowvar=False)) < 10
    assert list(g.counts) == [40, 15, 5]
    one_image_in_c = np.repeat([0, 1, 2], [40, 19, 1])
    with pytest.raises(CxraugError, match="class 'c' has 1 training image"):
        fit_class_gaussians(latents, one_image_in_c, ("a", "b", "c"), ridge=1e-3)


def test_latent_sampler_draws_from_each_class_gaussian():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    cov = np.stack([a @ a.T + np.eye(3), np.eye(3) * 0.25])
    g = ClassGaussians(("x", "y"), np.array([[5.0, 0, 0], [-5.0, 1, 2]]), cov, np.array([9, 9]), np.zeros(2))
    z = LatentSampler(g, torch.device("cpu"))(
        torch.tensor([0] * 20000 + [1] * 20000), torch.Generator().manual_seed(0)
    )
    for c, part in enumerate(z.double().chunk(2)):
        assert np.allclose(part.mean(0).numpy(), g.means[c], atol=0.05)
        assert np.allclose(np.cov(part.numpy(), rowvar=False), cov[c], atol=0.08)


def test_saved_gaussians_are_mean_and_covariance_of_that_class_codes(trained, prepared):
    root, _ = trained
    g = ClassGaussians.load(root / "models" / "class_gaussians.npz")
    meta = json.loads((root / "models" / "bagan.json").read_text())
    enc = BaganNets.build(Architecture(**meta["architecture"])).encoder.eval()
    enc.load_state_dict(safe_load(root / "models" / "autoencoder.pt")["encoder"])
    train = load_split(prepared, "train")
    assert g.classes == train.classes
    for c in range(train.n_classes):
        with torch.no_grad():
            codes = enc(to_model_range(train.images[train.labels == c])).double().numpy()
        assert g.counts[c] == len(codes)
        assert np.allclose(g.means[c], codes.mean(axis=0), rtol=1e-5, atol=1e-6)
        sample_cov = g.covariances[c] - g.ridges[c] * np.eye(len(codes[0]))
        assert np.allclose(sample_cov, np.cov(codes, rowvar=False), rtol=1e-4, atol=1e-7)
        np.linalg.cholesky(g.covariances[c])  # positive definite, even for classes smaller than latent_dim
    assert (g.counts < TINY.latent_dim).any(), (
        "the demo split should include a class with a singular covariance"
    )


# ------------------------------------------------------------------------- initialisation from the AE


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("init_discriminator", [True, False])
def test_gan_starts_from_the_trained_autoencoder(trained, init_discriminator):
    root, _ = trained
    meta = json.loads((root / "models" / "bagan.json").read_text())
    torch.manual_seed(0)
    nets = BaganNets.build(Architecture(**meta["architecture"]))
    trained_ae = safe_load(root / "models" / "autoencoder.pt")
    nets.encoder.load_state_dict(trained_ae["encoder"])
    nets.decoder.load_state_dict(trained_ae["decoder"])
    head_before = {k: v.clone() for k, v in nets.discriminator.head.state_dict().items()}
    assert not _state_equal(nets.generator, nets.decoder)

    init_gan_from_autoencoder(nets, init_discriminator)
    assert _state_equal(nets.generator, nets.decoder)  # weights and batch-norm statistics
    assert _state_equal(nets.discriminator.trunk, nets.encoder.trunk) is init_discriminator
    assert all(torch.equal(v, head_before[k]) for k, v in nets.discriminator.head.state_dict().items())


# ------------------------------------------------------------------------------- end to end, tracking


def test_tiny_run_writes_outputs_metrics_and_an_mlflow_run(trained, prepared):
    root, result = trained
    models = root / "models"
    for name in ("autoencoder.pt", "generator.pt", "discriminator.pt", "class_gaussians.npz", "bagan.json"):
        assert (models / name).is_file(), name
    metrics = json.loads((root / "metrics.json").read_text())
    train = load_split(prepared, "train")
    per_epoch = len(train) // TINY.batch_size
    assert (metrics["ae_steps"], metrics["gan_steps"]) == (per_epoch, 2 * per_epoch)
    assert metrics["mlflow_run_id"] == result.run_id
    assert 0 <= metrics["val_d_acc_real"] <= 1 and metrics["ae_val_loss"] > 0
    assert not (root / "checkpoints" / "gan.pt").exists(), "a finished stage leaves no checkpoint behind"

    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dvc.stage"] == "train_bagan" and "params.hash" in run.data.tags
    assert any(k.endswith("/train.npz.md5") for k in run.data.tags), "no dvc.lock: the file itself"
    for key in ("gan/d_loss", "gan/g_loss", "gan/d_acc_real", "gan/d_acc_fake"):
        history = client.get_metric_history(result.run_id, key)
        assert sorted(m.step for m in history) == list(range(1, 2 * per_epoch + 1)), key
    assert len(client.get_metric_history(result.run_id, "ae/loss")) == per_epoch
    assert [m.step for m in client.get_metric_history(result.run_id, "gan/val_d_acc_real")] == [
        per_epoch,
        2 * per_epoch,
    ]

    def files(path=None):
        for a in client.list_artifacts(result.run_id, path):
            yield from files(a.path) if a.is_dir else [a.path]

    artifacts = list(files())
    grids = sorted(a for a in artifacts if "samples~by_class+step+" in a and a.endswith(".png"))
    assert [a.split("+step+")[1].split("+")[0] for a in grids] == ["0", "1", "2"]  # decoder, then epochs
    finals = [a for a in artifacts if "samples~by_class~final+step+" in a and a.endswith(".png")]
    assert len(finals) == 1 and "+step+2+" in finals[0]  # one step: MLflow's card opens on the last epoch
    assert any("autoencoder~reconstructions+step+0" in a for a in artifacts)
    assert any("autoencoder~reconstructions~final+step+1" in a for a in artifacts)
    assert {
        "bagan/generator.pt",
        "bagan/discriminator.pt",
        "latent/class_gaussians.npz",
        "latent/pca.png",
    } <= set(artifacts)


# ------------------------------------------------------------------------------------------- resume


class Kill:
    """A step hook that interrupts training (like Ctrl-C) right after a given step of a phase."""

    def __init__(self, phase: str, step: int) -> None:
        self.phase, self.step, self.seen = phase, step, []

    def __call__(self, phase: str, step: int, nets) -> None:
        self.seen.append((phase, step))
        if (phase, step) == (self.phase, self.step):
            raise KeyboardInterrupt


def test_killed_runs_resume_from_their_last_checkpoint_and_end_where_an_uninterrupted_one_does(
    trained, prepared, tmp_path
):
    reference_root, reference = trained
    checkpoints = tmp_path / "checkpoints"

    with pytest.raises(KeyboardInterrupt):  # killed during the autoencoder
        _train(prepared, tmp_path, on_step=Kill("autoencoder", 6))
    saved = safe_load(checkpoints / "autoencoder.pt")
    assert (saved["step"], saved["extra"]["done"]) == (4, False)  # checkpoint_every=4: steps 5, 6 redone
    run_id = saved["run_id"]

    first_gan_step = {}

    def check_gan_start(phase, step, nets):
        # after one Adam step (|update| <= lr) G is still the decoder, D's trunk the encoder
        if (phase, step) == ("gan", 1):
            first_gan_step["g"] = _max_param_gap(nets["generator"], nets["decoder"])
            first_gan_step["d"] = _max_param_gap(nets["discriminator"].trunk, nets["encoder"].trunk)

    kill = Kill("gan", 6)
    with pytest.raises(KeyboardInterrupt):  # resumed, then killed during the GAN
        _train(prepared, tmp_path, on_step=lambda *a: (check_gan_start(*a), kill(*a)))
    assert kill.seen[0] == ("autoencoder", 5)
    rounding = 2e-7  # Adam's first step moves a weight by at most lr, then float32 rounds the weight
    assert 0 < first_gan_step["g"] <= TINY.lr_g + rounding and 0 < first_gan_step["d"] <= TINY.lr_d + rounding
    saved = safe_load(checkpoints / "gan.pt")
    assert saved["step"] == 4 and saved["run_id"] == run_id

    again = Kill("never", 0)
    result = _train(prepared, tmp_path, on_step=again)
    assert again.seen[0] == ("gan", 5), "the autoencoder was finished: it must not run again"
    assert result.run_id == run_id, "a resumed stage continues the same MLflow run"
    assert mlflow.MlflowClient().get_run(run_id).info.status == "FINISHED"
    assert not list(checkpoints.glob("*.pt"))

    # the same weights as the run that was never interrupted: optimizer states and random draws resumed
    for name in ("generator.pt", "discriminator.pt", "autoencoder.pt"):
        ours, theirs = safe_load(tmp_path / "models" / name), safe_load(reference_root / "models" / name)
        flat = (
            (lambda d: {f"{k}.{j}": w for k, v in d.items() for j, w in v.items()})
            if name == "autoencoder.pt"
            else dict
        )
        ours, theirs = flat(ours), flat(theirs)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs), name
    assert json.loads((tmp_path / "metrics.json").read_text())["gan_steps"] == reference.metrics["gan_steps"]


def _max_param_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    pairs = zip(a.parameters(), b.parameters(), strict=True)
    return max((x - y).abs().max().item() for x, y in pairs)


def test_checkpoints_belong_to_their_settings_and_data(prepared, tmp_path):
    import shutil

    base = fingerprint(TINY, [prepared / "train.npz"])
    assert fingerprint(TINY, [prepared / "train.npz"]) == base
    assert fingerprint(TINY.model_copy(update={"lr_g": 1e-3}), [prepared / "train.npz"]) != base
    other = tmp_path / "train.npz"
    shutil.copy(prepared / "train.npz", other)
    other.write_bytes(other.read_bytes() + b"\0")
    assert fingerprint(TINY, [other]) != base


# ------------------------------------------------------------------------------------------ proposer


def test_proposer_scores_are_d_softmax_of_the_intended_class(trained):
    root, _ = trained
    # fp32 as below ("auto" may pick bf16 on this CPU): with the He-initialised trunk D's logits are no
    # longer ~0, and bf16's rounding moves the scores by ~1e-4
    proposer = load_proposer(root / "models", torch.device("cpu"), "fp32")
    assert proposer.classes == tuple(json.loads((root / "models" / "bagan.json").read_text())["classes"])
    images, scores = proposer.propose(4, 7, torch.Generator().manual_seed(3))
    assert images.dtype == torch.uint8 and images.shape == (7, 32, 32)
    assert ((scores >= 0) & (scores <= 1)).all()

    meta = json.loads((root / "models" / "bagan.json").read_text())
    nets = BaganNets.build(Architecture(**meta["architecture"]))
    nets.generator.load_state_dict(safe_load(root / "models" / "generator.pt"))
    nets.discriminator.load_state_dict(safe_load(root / "models" / "discriminator.pt"))
    g, d = nets.generator.eval(), nets.discriminator.eval()
    gaussians = ClassGaussians.load(root / "models" / "class_gaussians.npz")
    with torch.no_grad():
        z = LatentSampler(gaussians, torch.device("cpu"))(
            torch.full((7,), 4), torch.Generator().manual_seed(3)
        )
        expected_images = to_uint8(g(z))
        expected_scores = d(to_model_range(images)).softmax(1)[:, 4]  # D's view of the image handed out
    assert (images.int() - expected_images.int()).abs().max() <= 1  # G(z) of the latents drawn for c
    assert torch.allclose(scores, expected_scores, atol=1e-5)

    again = proposer.propose(4, 7, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], images) and torch.equal(again[1], scores)
    proposer.batch_size = 2  # drawn in several batches: the same images
    batched = proposer.propose(4, 7, torch.Generator().manual_seed(3))
    assert torch.equal(batched[0], images) and torch.allclose(batched[1], scores, atol=1e-6)
    with pytest.raises(CxraugError, match="out of range"):
        proposer.propose(5, 1, torch.Generator())


def test_load_proposer_without_a_trained_model_is_a_one_line_error(tmp_path):
    with pytest.raises(CxraugError, match="run `cxraug train-bagan`"):
        load_proposer(tmp_path, torch.device("cpu"))


@pytest.mark.parametrize("verb", [["train-bagan"], ["bench", "bagan"]])
def test_verbs_explain_themselves(verb):
    out = subprocess.run(
        [sys.executable, "-m", "cxraug.cli", *verb, "--help"],
        capture_output=True,
        text=True,
        env=project_env(),
    )
    assert out.returncode == 0 and "Usage" in out.stdout and "--params" in out.stdout


def test_cli_reports_a_missing_prepared_split_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "cxraug.cli", "train-bagan", "--prepared", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env=project_env(),
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "run `cxraug prepare`" in out.stderr


# ------------------------------------------------------------------------------------------ pipeline

PIPELINE_PARAMS_TINY = {"latent_dim": 8, "g_base": 4, "d_base": 4, "batch_size": 16, "device": "cpu"}
PIPELINE_PARAMS = """
replicates: {generator_seeds: [0]}  # one replicate: train_bagan@0
prepare:
  image_size: 32
train_bagan:
  latent_dim: 8
  g_base: 4
  d_base: 4
  ae_epochs: 1
  epochs: 1
  batch_size: 64
  grid_per_class: 2
  device: cpu
  precision: fp32
synthesize:                 # dvc.yaml's classify matrices read it
  n_per_class: [4]
"""


@pytest.mark.slow
def test_dvc_repro_train_bagan_in_a_throwaway_project(tmp_path, demo_raw):
    from tests.helpers import dvc, make_project

    project = make_project(tmp_path / "project", PIPELINE_PARAMS, raw=demo_raw)

    assert dvc(project, "commit", "-f", "-q", "data.dvc").returncode == 0
    first = dvc(project, "repro", "train_bagan")
    assert first.returncode == 0, first.stderr[-2000:]
    for name in ("generator.pt", "discriminator.pt", "autoencoder.pt", "class_gaussians.npz", "samples.png"):
        assert (project / "models" / "bagan" / "seed0" / name).is_file(), name
    metrics = json.loads((project / "metrics" / "train_bagan" / "seed0.json").read_text())
    assert set(metrics["d_val_auc"]) == set(metrics["train_images"])  # D on real val, per class
    assert metrics["gan_steps"] > 0 and metrics["mlflow_run_id"]
    assert "didn't change" in dvc(project, "repro", "train_bagan").stdout
    shown = dvc(project, "metrics", "show", "--json", "metrics/train_bagan/seed0.json").stdout
    assert "val_d_acc_real" in shown
    images, scores = load_proposer(project / "models" / "bagan" / "seed0", torch.device("cpu")).propose(
        0, 3, torch.Generator().manual_seed(0)
    )
    assert images.shape == (3, 32, 32) and len(scores) == 3


def test_discriminator_report_is_per_class_auc_and_balanced_accuracy_on_real_images():
    """D's val report equals sklearn's one-vs-rest AUC and balanced accuracy; a D that calls everything
    the majority class has balanced accuracy 1/K however high its plain accuracy."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from cxraug.data.datasets import Split
    from cxraug.gans.bagan.critic import discriminator_report

    rng = np.random.default_rng(0)
    k, n = 3, 300
    labels = np.r_[np.zeros(200, int), rng.integers(1, k, n - 200)]
    logits = rng.normal(size=(n, k + 1))
    logits[np.arange(n), labels] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    split = Split(
        images=torch.zeros((n, 4, 4), dtype=torch.uint8),
        labels=torch.from_numpy(labels),
        patient_ids=np.arange(n).astype(str),
        image_index=np.arange(n).astype(str),
        classes=("A", "B", "C"),
    )
    r = discriminator_report(probs, split)
    for c, name in enumerate(split.classes):
        assert r["d_val_auc"][name] == pytest.approx(roc_auc_score(labels == c, probs[:, c]), abs=1e-5)
    expected = balanced_accuracy_score(labels, probs[:, :k].argmax(1))
    assert r["d_val_balanced_accuracy"] == pytest.approx(expected, abs=1e-5)
    majority = np.zeros_like(probs)
    majority[:, 0] = 1
    lazy = discriminator_report(majority, split)
    assert (
        lazy["d_val_balanced_accuracy"] == pytest.approx(1 / k, abs=1e-5)
        and lazy["d_val_predicted"]["A"] == n
    )
