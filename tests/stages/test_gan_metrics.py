"""GAN metrics: torch-fidelity figures through our registered extractors, the memorisation audit, the
near-copy filter in synthesis, the classification accuracy score, and the stage end to end."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cxraug.core.config import ClassifyParams, Params, SynthesizeParams, parse_params
from cxraug.core.errors import CxraugError
from cxraug.data.datasets import Split
from cxraug.metrics import fidelity, memorisation

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
    assert "precision" not in result and len(skipped) == 1 and skipped[0].startswith("pr: 3 / 40 images")
    result, skipped = scores(f[:1], f, min_images=2)
    assert result == {} and len(skipped) == 3


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
    labels, patients = torch.zeros(120, dtype=torch.int64), torch.arange(120)  # one film per patient
    audit = memorisation.audit(synthetic, real, labels, patients, copy_threshold=0.5)
    assert audit.copies[:6].all() and not audit.copies[6:].any()
    assert audit.nearest_index[:6].tolist() == sources.tolist()
    assert audit.distance[:3].tolist() == [0.0, 0.0, 0.0]  # exact, not float32 rounding noise
    assert audit.ratio[6:].min() > 0.7  # independent images sit as far as real images from each other
    summary = audit.summary(np.zeros(len(synthetic), dtype=int), ("all",))
    assert summary["copies"] == 6 and summary["copy_fraction"] == pytest.approx(6 / 36, abs=1e-6)

    f_real, f_synth = features(real), features(synthetic)
    in_features = memorisation.audit(f_synth, f_real, labels, patients, 0.5, "tiny")
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
    with torch.autocast("cpu", dtype=torch.bfloat16):  # synthesis may run under bf16 autocast
        assert torch.equal(memorisation.nearest_pixels(query, real)[0], index)


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


def make_copying(model_dir, device, precision="auto"):
    return CopyingProposer()


def test_drop_near_copies_drops_the_planted_copies_and_nothing_else():
    from cxraug.synthesis import draw as synth

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
    from cxraug.core.runtime import atomic_savez
    from cxraug.gans import registry

    copier = registry.Generator("copier", "Copier", train=None, load_proposer=make_copying, searched=())
    monkeypatch.setitem(registry.GENERATORS, "copier", copier)
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

    from cxraug.stages import synthesize as synth_stage

    def params(drop):
        return SynthesizeParams(
            n_per_class=[10],
            filter={"threshold": 0.5, "max_tries_factor": 5, "drop_near_copies": drop},
            batch_size=8,
            device="cpu",
            precision="fp32",
        )

    out, metrics_path = tmp_path / "out", tmp_path / "m.json"
    result = synth_stage.run_synthesize(
        params(True), "copier", copying_registry, out, metrics_path, prepared=tmp_path / "prepared"
    )
    metrics = json.loads(metrics_path.read_text())
    dropped = metrics["near_copies"]["per_class"]
    assert metrics["near_copies"]["dropped"] == sum(dropped.values()) > 0
    assert metrics["per_class"]["a"]["near_copies_dropped"] == dropped["a"] == result.draws[0].near_copies
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.metrics["near_copies.a"] == dropped["a"]

    plain = tmp_path / "plain.json"
    synth_stage.run_synthesize(params(False), "copier", copying_registry, tmp_path / "o2", plain)
    assert "near_copies" not in json.loads(plain.read_text())
    with pytest.raises(CxraugError, match="drop_near_copies needs the prepared split"):
        synth_stage.run_synthesize(params(True), "copier", copying_registry, tmp_path / "o3", None)


# ------------------------------------------------------------------------- classification accuracy score


def toy_split(n: int, seed: int, classes=("left", "middle", "right")) -> Split:
    """Class k: a bar in the k-th third of the image, on top of class-independent content that dominates
    the image (a blob anywhere, texture, brightness), so a label-blind net does not sort by class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(classes)
    images = phantoms(n, seed + 100).float() + 40 * (torch.rand(n, 1, 1, generator=g) - 0.5)
    for i, k in enumerate(labels.tolist()):
        images[i, 8:24, 2 + 10 * k : 10 + 10 * k] += 60
    return Split(
        images=images.round().clamp(0, 255).to(torch.uint8),
        labels=labels,
        classes=tuple(classes),
        patient_ids=np.array([f"{seed}-{i}" for i in range(n)]),
        image_index=np.array([f"{seed}-{i}.png" for i in range(n)]),
    )


CAS_PARAMS = ClassifyParams(
    seeds=[0], epochs=4, patience=4, batch_size=32, lr=0.003, width=0.0625, device="cpu", precision="fp32",
    bootstrap=200,
)  # fmt: skip


def test_cas_is_high_on_a_separable_toy_set_and_near_chance_with_shuffled_labels():
    from cxraug.classifier.cas import classification_accuracy_score

    synthetic, val, test = toy_split(150, 1), toy_split(60, 2), toy_split(90, 3)
    separable = classification_accuracy_score(synthetic.images, synthetic.labels, val, test, CAS_PARAMS)
    summary = separable.summary(test, CAS_PARAMS)
    assert summary["macro_auc"] > 0.8 and min(summary["per_class_auc"].values()) > 0.7
    assert summary["train_images"] == {"left": 50, "middle": 50, "right": 50}

    # label-blind images (a generator that ignores the class): chance, up to the small optimism of picking
    # the epoch on real val labels (measured on 8 shuffles of this toy: 0.47-0.61, mean 0.55)
    shuffled_labels = synthetic.labels[torch.randperm(150, generator=torch.Generator().manual_seed(0))]
    three_seeds = CAS_PARAMS.model_copy(update={"seeds": [0, 1, 2]})
    shuffled = classification_accuracy_score(synthetic.images, shuffled_labels, val, test, three_seeds)
    blind = shuffled.summary(test, three_seeds)["macro_auc"]
    assert abs(blind - 0.5) < 0.15 and summary["macro_auc"] - blind > 0.2


# -------------------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def project(tmp_path_factory, demo_raw):
    """A prepared 32 px split, an (untrained) embedder and classifier, a baseline's test scores, and
    synthetic images for bagan: perturbed training images, the first 3 of each class exact copies."""
    from cxraug.classifier.predict import save_classifier
    from cxraug.core.config import PrepareParams
    from cxraug.core.runtime import atomic_savez
    from cxraug.data.datasets import load_split
    from cxraug.data.prepare import prepare
    from cxraug.gans.opengan.embedder import Embedder, save_embedder
    from cxraug.metrics.auc import per_class_auc
    from cxraug.nets.vgg import build_vgg16
    from cxraug.synthesis.draw import ClassDraw
    from cxraug.synthesis.files import write_synthetic

    root = tmp_path_factory.mktemp("gan_metrics")
    prepare(PrepareParams(image_size=32), demo_raw, root / "data/prepared", root / "prepare.json")
    train, test = load_split(root / "data/prepared", "train"), load_split(root / "data/prepared", "test")
    torch.manual_seed(0)
    save_embedder(Embedder(32, embed_dim=16, d_base=8), root / "models/embedder/seed0.pt", train.classes, [])
    vgg = build_vgg16(len(train.classes), image_size=32, width=0.0625)
    save_classifier(vgg, root / "models/classifier/baseline.pt", train.classes)
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(len(train.classes)), size=(1, len(test)))
    atomic_savez(
        root / "data/scores/baseline.npz",
        scores=scores.astype(np.float32),
        labels=test.labels.numpy(),
        patient_ids=np.asarray(test.patient_ids).astype(str),
        seeds=np.array([0]),
        classes=np.array(train.classes),
        image_index=np.asarray(test.image_index).astype(str),
    )
    (root / "metrics/classify").mkdir(parents=True)
    auc = dict(zip(train.classes, per_class_auc(scores[0], test.labels.numpy()).tolist(), strict=True))
    baseline = {
        "classes": list(train.classes),
        "seeds": [0],
        "per_class_auc": auc,
        "per_class_auc_std": dict.fromkeys(auc, 0.0),
        "per_class_auc_ci": {c: [a - 0.1, a + 0.1] for c, a in auc.items()},
        "macro_auc": 0.5,
        "macro_auc_std": 0.0,
        "macro_auc_ci": [0.4, 0.6],
    }
    (root / "metrics/classify/baseline.json").write_text(json.dumps(baseline))
    draws = []
    g = torch.Generator().manual_seed(1)
    for k, name in enumerate(train.classes):
        own = train.images[train.labels == k][:20]
        noisy = (own.int() + torch.randint(-40, 41, own.shape, generator=g)).clamp(0, 255).to(torch.uint8)
        images = torch.cat([own[:3], noisy[3:]])
        ones = torch.ones(len(images))
        draws.append(ClassDraw(name, k, 20, images, ones, ones, images[:0], 0.5))
    write_synthetic(draws, root / "data/synthetic/bagan/seed0")
    return root


def stage_params(**gan_metrics) -> Params:
    return parse_params(
        {
            "gan_metrics": {"kid_subsets": 10, "device": "cpu", "precision": "fp32", "cas": {"epochs": 1}}
            | gan_metrics,
            "classify": {"seeds": [0], "width": 0.0625, "batch_size": 32, "bootstrap": 100},
        }
    )


def test_stage_writes_the_documented_metrics_and_an_mlflow_run(project, tracking_uri, monkeypatch):
    import mlflow

    from cxraug.stages import gan_metrics

    monkeypatch.chdir(project)
    result = gan_metrics.run(stage_params(), gan_metrics.Paths("bagan"))
    m = json.loads((project / "metrics/gan/bagan/seed0.json").read_text())
    assert m == json.loads(json.dumps(result.metrics))
    classes = m["classes"]
    assert m["gan"] == "bagan" and m["extractors"] == ["random", "embedder", "classifier"]
    real = m["real_train_per_class"]
    assert m["synthetic_per_class"] == {c: min(20, real[c]) for c in classes}
    fid = m["fidelity"]
    assert fid["reference"].startswith("val") and set(fid["spaces"]) == set(m["extractors"])
    # the fixture's untrained embedder maps every image to about one unit vector: degenerate, no figure
    assert m["degenerate_spaces"] == [s for s, e in fid["spaces"].items() if e["degenerate"]] == ["embedder"]
    live = [e for e in m["extractors"] if e not in m["degenerate_spaces"]]
    figures = {f"{metric}_{e}" for metric in ("fd", "kid", "precision", "recall") for e in live}
    assert set(fid["per_class"]) == set(classes)
    for c, entry in [("overall", fid["overall"]), *fid["per_class"].items()]:
        assert set(entry["generated_vs_real"]) == set(entry["real_vs_real"])  # the floor beside each figure
        if entry["n_per_side"] >= 10:  # gan_metrics.min_images
            assert figures <= set(entry["generated_vs_real"])
            assert {f"{k}_sd" for k in figures} <= set(entry["real_vs_real"])
        else:  # too few images: no figure, each skip counted with its reason
            assert not figures & set(entry["generated_vs_real"])
            assert sum(r.startswith(f"{c} / ") for r in m["skipped"]["reasons"]) == 2 * len(live) * 3
        assert not any("embedder" in k for k in entry["generated_vs_real"])
    # equal sizes: every side of a class's comparisons holds min(synthetic, train, val) of it
    val = m["real_val_per_class"]
    for c, entry in fid["per_class"].items():
        assert entry["n_per_side"] == min(m["synthetic_per_class"][c], real[c], val[c])
    assert m["skipped"]["count"] == len(m["skipped"]["reasons"]) > 0  # the demo's few Nodule images
    assert isinstance(m["class_blind"], list)
    pixel = m["memorisation"]["pixel"]
    assert pixel["copies"] >= 3 * len(classes)  # the planted exact copies at least
    assert all(v["copies"] >= 3 for v in pixel["per_class"].values())
    assert m["memorisation"]["feature"]["space"] == "random"  # the first extractor: independent
    cas = m["cas"]
    assert set(cas["per_class_auc"]) == set(classes) and 0 <= cas["macro_auc"] <= 1
    assert cas["baseline"]["macro_auc"] == 0.5 and set(cas["vs_baseline"]["per_class"]) == set(classes)

    client = mlflow.MlflowClient()
    run = client.get_run(m["mlflow_run_id"])
    assert run.data.tags["dvc.stage"] == "gan_metrics@bagan-0" and run.data.tags["gan"] == "bagan"
    gen = fid["overall"]["generated_vs_real"]
    assert run.data.metrics["fidelity/generated_vs_real/fd_random"] == pytest.approx(gen["fd_random"])
    assert run.data.metrics["memorisation/copy_fraction_pixel"] == pixel["copy_fraction"]
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "memorisation")}
    assert {"memorisation/distances.png", "memorisation/closest_pixel.png"} <= paths

    # the report shows the section: bagan's figures by name, opengan (not run) as dashes
    from cxraug.core.config import ReportParams
    from cxraug.report.inputs import Inputs
    from cxraug.stages.report import make_report

    inputs = Inputs(
        project / "metrics/classify", project / "data/scores", project / "data/synthetic",
        project / "data/prepared", project / "metrics/gan",
    )  # fmt: skip
    report = make_report(ReportParams(n_bootstrap=100), [20], inputs, project / "reports", project / "c.json")
    md = report.markdown.read_text()
    section = md.split("## GAN quality and memorisation", 1)[1].split("## Training sets", 1)[0]
    bagan, opengan = section.split("### NewGAN (`opengan`)")
    assert "`fd_random` generated vs real | real vs real" in bagan and "`precision_classifier`" in bagan
    floor = fid["overall"]["real_vs_real"]
    assert f"{gen['fd_random']:.3g} ± {gen['fd_random_sd']:.3g} | {floor['fd_random']:.3g}" in bagan
    assert f"{cas['macro_auc']:.3f}" in bagan
    assert "No figures." in opengan
    # a class-blind generator: warned about before any AUC table, and marked beside its columns and rows
    heading = next(line for line in bagan.splitlines() if line.startswith("### "))
    assert heading.startswith("### BAGAN (`bagan`)") and bool(m["class_blind"]) == (
        "⚠ class-blind" in heading
    )
    if m["class_blind"]:
        assert md.index("Warning: class-blind generator") < md.index("## Augmenting")
        assert "+ BAGAN ⚠ class-blind" in md  # (no comparison row: only the baseline has scores here)
    assert "`dvc repro gan_metrics@opengan-<k>`" in md
    assert (project / "reports/figures/gan_precision_recall.png").is_file()


def test_stage_mistakes_are_one_line_errors(project, tracking_uri, monkeypatch, tmp_path):
    from cxraug.stages import gan_metrics

    monkeypatch.chdir(project)
    with pytest.raises(CxraugError, match=r"synthesize@opengan-0"):
        gan_metrics.run(stage_params(), gan_metrics.Paths("opengan"))
    with pytest.raises(CxraugError, match="unknown GAN"):
        gan_metrics.run(stage_params(), gan_metrics.Paths("stylegan"))
    with pytest.raises(CxraugError, match="inception_weights: .*not found"):
        gan_metrics.run(
            stage_params(inception_weights=str(tmp_path / "none.pth")), gan_metrics.Paths("bagan")
        )


def test_gan_metrics_verb_explains_itself(monkeypatch, capsys):
    from cxraug.cli.app import main

    monkeypatch.setattr(sys, "argv", ["cxraug", "gan-metrics", "--help"])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "torch-fidelity" in out and "memorisation" in out
