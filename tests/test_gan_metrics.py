"""GAN metrics: torch-fidelity figures through our registered extractors, the memorisation audit, the
near-copy filter in synthesis, the classification accuracy score, and the stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cxraug.config import GanMetricsParams, SynthesizeParams, parse_params
from cxraug.errors import CxraugError
from cxraug.evaluate import fidelity, memorisation
from cxraug.evaluate.gan_metrics import fidelity_table, real_mix_indices

TINY = "cxraug-test-tiny"


class LocalStatistics(nn.Module):
    """Deterministic features of [-1, 1] images: 4x4 local means and local gradient energies (so blur,
    brightness and content all move them)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx, dy = (x[..., :, 1:] - x[..., :, :-1]).abs(), (x[..., 1:, :] - x[..., :-1, :]).abs()
        pool = [F.adaptive_avg_pool2d(t, 4).flatten(1) for t in (x, dx, dy)]
        return torch.cat(pool, 1)


class TinyFeatures(fidelity.DomainFeatures):
    @staticmethod
    def load(path) -> nn.Module:
        return LocalStatistics()


@pytest.fixture(scope="module", autouse=True)
def tiny_extractor():
    fidelity.register(TINY, TinyFeatures)


def phantoms(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """uint8 [n, size, size]: a bright blob at a random place on a textured background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    centre = torch.rand(n, 2, generator=g) * size * 0.6 + size * 0.2
    radius = 3 + 4 * torch.rand(n, 1, 1, generator=g)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    blob = 90 * torch.exp(-d2 / (2 * radius**2))
    texture = 25 * torch.randn(n, size, size, generator=g)
    return (100 + blob + texture).round().clamp(0, 255).to(torch.uint8)


def features(images: torch.Tensor) -> torch.Tensor:
    return fidelity.extract_features(images, TINY, None, batch_size=64)


def scores(synthetic, real, **kw):
    settings = {"kid_subsets": 20, "kid_subset_size": 100, "pr_neighbourhood": 3, "min_images": 10, "seed": 0}
    return fidelity.fidelity_scores(synthetic, real, **(settings | kw))


def blur(images: torch.Tensor) -> torch.Tensor:
    x = images[:, None].float()
    return F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)[:, 0].round().to(torch.uint8)


# ------------------------------------------------------------------------------------------ fidelity


def test_fd_is_zero_for_a_set_against_itself_and_grows_when_the_images_are_blurred_or_shifted():
    real, same_kind = phantoms(200, seed=0), phantoms(200, seed=1)
    f_real = features(real)
    itself, skipped = scores(f_real, f_real)
    assert not skipped
    assert abs(itself["fd"]) < 1e-6 and itself["precision"] == 1.0 and itself["recall"] == 1.0
    fair, _ = scores(features(same_kind), f_real)
    blurred, _ = scores(features(blur(same_kind)), f_real)
    brighter, _ = scores(features((same_kind.int() + 40).clamp(0, 255).to(torch.uint8)), f_real)
    assert fair["fd"] > 0
    assert blurred["fd"] > 10 * fair["fd"] and brighter["fd"] > 10 * fair["fd"]
    assert blurred["kid"] > 10 * abs(fair["kid"]) and brighter["kid"] > 10 * abs(fair["kid"])
    assert fair["precision"] > 0.6
    assert blurred["precision"] < fair["precision"] / 2 and brighter["precision"] < fair["precision"] / 2


def test_sliced_figures_equal_torch_fidelitys_own_calculate_metrics():
    """fidelity_scores applies torch-fidelity's metric functions to features extracted once; it must give
    what torch-fidelity's public entry point computes from the images."""
    import torch_fidelity

    real, synthetic = phantoms(120, seed=0), phantoms(90, seed=5)
    ours, _ = scores(features(synthetic), features(real), kid_subset_size=50, kid_subsets=10)
    theirs = torch_fidelity.calculate_metrics(
        input1=fidelity.UInt8Images(synthetic),
        input2=fidelity.UInt8Images(real),
        feature_extractor=TINY,
        fid=True,
        kid=True,
        prc=True,
        kid_subsets=10,
        kid_subset_size=50,
        prc_neighborhood=3,
        rng_seed=0,
        cuda=False,
        cache=False,
        save_cpu_ram=True,
        verbose=False,
    )
    assert ours["fd"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3, abs=1e-7)
    assert ours["precision"] == pytest.approx(theirs["precision"])
    assert ours["recall"] == pytest.approx(theirs["recall"])


def test_too_few_images_skip_the_metric_with_a_reason_instead_of_failing():
    f = features(phantoms(40, seed=0))
    result, skipped = scores(f[:3], f, min_images=2)
    assert "fd" in result and "kid" in result and result["kid_subset_size"] == 3
    assert "precision" not in result and len(skipped) == 1 and skipped[0].startswith("pr: 3 synthetic")
    result, skipped = scores(f[:1], f, min_images=2)
    assert result == {} and len(skipped) == 3


def test_fidelity_table_compares_each_class_and_the_real_class_mix_and_counts_skips():
    real = phantoms(150, seed=0)
    real_labels = torch.tensor([0] * 100 + [1] * 45 + [2] * 5)
    synthetic = phantoms(90, seed=1)
    synthetic_labels = torch.arange(3).repeat_interleave(30)
    f = {"tiny": (features(synthetic), features(real))}
    table, skipped = fidelity_table(
        f, synthetic_labels, real_labels, ("a", "b", "c"), GanMetricsParams(kid_subsets=5, min_images=10)
    )
    # the real mix is 100:45:5 -> at most 30 synthetic of class a: 30, 13, 1
    assert table["overall"]["n_synthetic"] == 44 and table["overall"]["n_real"] == 150
    assert table["per_class"]["a"]["n_real"] == 100 and table["per_class"]["c"]["n_synthetic"] == 30
    for group in (table["overall"], table["per_class"]["a"], table["per_class"]["b"]):
        assert {"fd_tiny", "kid_tiny", "kid_std_tiny", "precision_tiny", "recall_tiny"} <= set(group)
    assert not any(k.endswith("_tiny") for k in table["per_class"]["c"])  # 5 real images: all skipped
    assert len(skipped) == 3 and all(s.startswith("c / tiny / ") for s in skipped)


def test_real_mix_keeps_the_real_proportions_and_the_first_images_of_each_class():
    synthetic = torch.tensor([0] * 10 + [1] * 10 + [2] * 10)
    chosen = real_mix_indices(synthetic, torch.tensor([0] * 40 + [1] * 20 + [2] * 0), 3)
    assert chosen.tolist() == list(range(10)) + list(range(10, 15))


def test_fidelity_keys_name_the_feature_space():
    assert fidelity.metric_key("fd", "embedder") == "fd_embedder"
    assert fidelity.metric_key("fd", "inception") == "fid_inception"
    assert fidelity.metric_key("precision", "classifier") == "precision_classifier"


def test_missing_inception_weights_are_a_one_line_error(tmp_path):
    with pytest.raises(CxraugError, match="inception_weights: .*not found") as err:
        fidelity.extract_features(phantoms(4, 0), "inception", tmp_path / "nope.pth")
    assert "\n" not in str(err.value)


def test_params_refuse_a_floor_below_the_neighbourhood():
    with pytest.raises(CxraugError, match="must exceed pr_neighbourhood"):
        parse_params({"gan_metrics": {"min_images": 3, "pr_neighbourhood": 3}})
    with pytest.raises(CxraugError, match="gan_metrics.extractors"):
        parse_params({"gan_metrics": {"extractors": ["embedder", "vgg"]}})


# --------------------------------------------------------------------------------------- memorisation


def test_audit_finds_planted_copies_of_training_images_and_no_independent_image():
    real = phantoms(120, seed=0)
    sources = torch.tensor([3, 17, 64, 99, 110, 5])
    exact = real[sources[:3]]
    noisy = real[sources[3:]].int() + torch.randint(
        -3, 4, (3, 32, 32), generator=torch.Generator().manual_seed(1)
    )
    independent = phantoms(30, seed=7)
    synthetic = torch.cat([exact, noisy.clamp(0, 255).to(torch.uint8), independent])
    audit = memorisation.audit_pixels(synthetic, real, copy_threshold=0.5)
    assert audit.copies[:6].all() and not audit.copies[6:].any()
    assert audit.nearest_index[:6].tolist() == sources.tolist()
    assert audit.distance[:3].tolist() == [0.0, 0.0, 0.0]  # exact, not float32 rounding noise
    assert audit.ratio[6:].min() > 0.7  # independent images sit as far as real images from each other
    summary = audit.summary(np.zeros(len(synthetic), dtype=int), ("all",))
    assert summary["copies"] == 6 and summary["copy_fraction"] == pytest.approx(6 / 36, abs=1e-6)

    f_real, f_synth = features(real), features(synthetic)
    in_features = memorisation.audit_features(f_synth, f_real, 0.5, "tiny")
    assert in_features.copies[:3].all() and not in_features.copies[6:].any()


def test_chunked_nearest_neighbours_equal_brute_force_and_skip_only_the_row_itself():
    real = phantoms(70, seed=2)
    real[50] = real[10]  # a duplicate inside the reference set
    query = phantoms(25, seed=3)
    index, distance = memorisation.nearest_pixels(query, real, query_chunk=7, reference_chunk=16)
    brute = torch.cdist(memorisation.pixels(query).double(), memorisation.pixels(real).double())
    assert torch.equal(index, brute.argmin(1))
    assert torch.allclose(distance, brute.min(1).values / 32, atol=1e-9)
    self_index, self_distance = memorisation.nearest_pixels(
        real, real, exclude_self=True, query_chunk=9, reference_chunk=16
    )
    assert self_index[10] == 50 and self_index[50] == 10 and self_distance[10] == 0
    assert (self_index != torch.arange(70)).all()


# ------------------------------------------------------------------------------ near-copies in synthesis


class CopyingProposer:
    """Every third candidate is an exact training image, the others fresh phantoms; all score 1. It
    records what it proposed, and which were copies."""

    classes = ("a", "b")
    training: torch.Tensor = phantoms(60, seed=0)

    def __init__(self) -> None:
        self.proposed: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {0: [], 1: []}

    def propose(self, class_index, n, generator):
        fresh = phantoms(n, seed=int(torch.randint(0, 2**31, (1,), generator=generator)))
        pick = torch.randint(0, len(self.training), (n,), generator=generator)
        is_copy = torch.arange(n) % 3 == 0
        images = torch.where(is_copy[:, None, None], self.training[pick], fresh)
        self.proposed[class_index].append((images, is_copy))
        return images, torch.ones(n)


def make_copying(model_dir, device):
    return CopyingProposer()


def test_drop_near_copies_drops_the_planted_copies_and_nothing_else():
    from cxraug.gans import synthesize as synth

    def run(near_copy):
        proposer = CopyingProposer()
        draws = synth.synthesize(proposer, 20, 0.5, 5.0, 8, torch.Generator().manual_seed(3), near_copy)
        return proposer, draws

    copy_filter = memorisation.NearCopyFilter(CopyingProposer.training, copy_threshold=0.5)
    proposer, filtered = run(copy_filter)
    for c, draw in enumerate(filtered):
        images = torch.cat([im for im, _ in proposer.proposed[c]])
        is_copy = torch.cat([flag for _, flag in proposer.proposed[c]])
        assert torch.equal(copy_filter(images), is_copy)  # the filter sees exactly the planted copies
        originals = images[~is_copy]
        assert torch.equal(draw.images, originals[:20])  # every original kept, in draw order
        twentieth = int(torch.nonzero(~is_copy)[19]) + 1
        assert draw.near_copies == int(is_copy[:twentieth].sum()) > 0
        assert draw.summary()["near_copies_dropped"] == draw.near_copies
    # off: the first 20 candidates, copies included, exactly as before the filter existed
    proposer, plain = run(None)
    for c, draw in enumerate(plain):
        assert draw.near_copies is None and "near_copies_dropped" not in draw.summary()
        assert torch.equal(draw.images, torch.cat([im for im, _ in proposer.proposed[c]])[:20])


@pytest.fixture
def copying_registry(monkeypatch, tmp_path):
    from cxraug.gans import synthesize as synth
    from cxraug.runtime import atomic_savez

    monkeypatch.setitem(synth.PROPOSERS, "copier", "tests.test_gan_metrics:make_copying")
    model_dir = tmp_path / "models" / "copier"
    model_dir.mkdir(parents=True)
    training = CopyingProposer.training
    atomic_savez(
        tmp_path / "prepared" / "train.npz",
        images=training.numpy(),
        labels=np.arange(len(training)) % 2,
        patient_ids=np.array([f"p{i}" for i in range(len(training))]),
        image_index=np.array([f"{i}.png" for i in range(len(training))]),
        classes=np.array(CopyingProposer.classes),
    )
    return model_dir


def test_synthesize_stage_counts_dropped_near_copies(tracking_uri, copying_registry, tmp_path):
    import mlflow

    from cxraug.gans import synthesize as synth

    def params(drop):
        return SynthesizeParams(
            n_per_class=[10],
            filter={"threshold": 0.5, "max_tries_factor": 5, "drop_near_copies": drop},
            batch_size=8,
            device="cpu",
            precision="fp32",
        )

    out, metrics_path = tmp_path / "out", tmp_path / "m.json"
    result = synth.run_synthesize(
        params(True), "copier", copying_registry, out, metrics_path, prepared=tmp_path / "prepared"
    )
    metrics = json.loads(metrics_path.read_text())
    dropped = metrics["near_copies"]["per_class"]
    assert metrics["near_copies"]["dropped"] == sum(dropped.values()) > 0
    assert metrics["per_class"]["a"]["near_copies_dropped"] == dropped["a"] == result.draws[0].near_copies
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.metrics["near_copies.a"] == dropped["a"]

    plain = tmp_path / "plain.json"
    synth.run_synthesize(params(False), "copier", copying_registry, tmp_path / "o2", plain)
    assert "near_copies" not in json.loads(plain.read_text())
    with pytest.raises(CxraugError, match="drop_near_copies needs the prepared split"):
        synth.run_synthesize(params(True), "copier", copying_registry, tmp_path / "o3", None)
