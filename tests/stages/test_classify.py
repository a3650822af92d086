"""The classify stage: variants, training sets, early stopping, resume, and a tiny end-to-end run.

Tiny settings throughout: 32 px phantoms, a 1/16-width VGG16 (same depth), one or two epochs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import cxraug.classifier.seeds as seeds_module
import cxraug.classifier.train as classifier_module
import cxraug.stages.classify as classify_module
from cxraug.classifier.predict import load_classifier, load_seed_classifiers, predict_proba, saved_runs
from cxraug.classifier.train import inverse_frequency_weights, train_classifier
from cxraug.classifier.variants import build_training_set, parse_variant, valid_variants
from cxraug.core.checkpoint import Checkpointer
from cxraug.core.config import ClassifyParams, Params, PrepareParams, ReplicatesParams, SynthesizeParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import slug
from cxraug.core.training import run_epoch_batches
from cxraug.data.datasets import load_split
from cxraug.gans.registry import names
from cxraug.stages.classify import Paths, load_extra_synthetic, split_md5

GANS = names()


def run_classify(variant: str, params: Params, paths: Paths):
    """The classify stage for one variant."""
    return classify_module.run(params, replace(paths, variant=variant))


TINY = ClassifyParams(
    seeds=[0],
    budget="epochs",
    epochs=2,
    patience=5,
    batch_size=32,
    width=1 / 16,
    bootstrap=200,
    precision="fp32",
    device="cpu",
)
N_SYNTH = 6


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, demo_raw, tracking_uri) -> Path:
    from cxraug.data.prepare import prepare

    root = tmp_path_factory.mktemp("classify")
    prepare(PrepareParams(image_size=32), demo_raw, root / "data/prepared", root / "metrics/prepare.json")
    return root / "data/prepared"


SYNTHETIC_VALUE = 77  # every synthetic pixel: no real phantom is a constant image


def write_synthetic(directory: Path, classes, n: int, size: int = 32) -> Path:
    """The documented on-disk format: <class_slug>/<00000>.png + index.csv (file, class, label, score)."""
    rows = []
    for label, name in enumerate(classes):
        (directory / slug(name)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            file = f"{slug(name)}/{i:05d}.png"
            Image.fromarray(np.full((size, size), SYNTHETIC_VALUE + label, np.uint8), mode="L").save(
                directory / file
            )
            rows.append({"file": file, "class": name, "label": label, "score": 0.9})
    pd.DataFrame(rows).to_csv(directory / "index.csv", index=False)
    return directory


@pytest.fixture
def project(tmp_path, prepared) -> Paths:
    paths = replace(Paths().under(tmp_path), prepared=prepared)
    classes = load_split(prepared, "train").classes
    for g in GENERATOR_SEEDS:  # two generator replicates, data/synthetic/bagan/seed<g>
        write_synthetic(paths.synthetic / "bagan" / f"seed{g}", classes, N_SYNTH)
        (paths.synthesize_metrics / "bagan").mkdir(parents=True, exist_ok=True)
        info = {"mlflow_run_id": f"gan-run-{g}"}
        (paths.synthesize_metrics / "bagan" / f"seed{g}.json").write_text(json.dumps(info))
    return paths


GENERATOR_SEEDS = [0, 1]


def params_with(**classify) -> Params:
    return Params(
        replicates=ReplicatesParams(generator_seeds=GENERATOR_SEEDS),
        synthesize=SynthesizeParams(n_per_class=[4, N_SYNTH]),
        classify=TINY.model_copy(update=classify),
    )


# ------------------------------------------------------------------------------------------------ variants


def test_variants_follow_synthesize_n_per_class():
    assert valid_variants([100, 300], GANS) == [
        "baseline",
        "weighted_loss",
        "oversample",
        "standard_aug_100",
        "standard_aug_300",
        "bagan_100",
        "bagan_300",
        "opengan_100",
        "opengan_300",
        "diffusion_100",
        "diffusion_300",
    ]
    v = parse_variant("opengan_300", [100, 300], GANS)
    assert (v.kind, v.n, v.gan) == ("opengan", 300, "opengan")
    for bad in ("bagan_200", "standard_aug", "Baseline", "bagan_100_x"):
        with pytest.raises(CxraugError, match=r"unknown variant .*valid: baseline, weighted_loss"):
            parse_variant(bad, [100, 300], GANS)


def test_weighted_loss_weights_are_inverse_frequency():
    labels = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    weights = inverse_frequency_weights(labels, 3)
    counts = torch.tensor([60.0, 30.0, 10.0])
    torch.testing.assert_close(weights * counts, torch.full((3,), 100 / 3))  # w_c proportional to 1 / n_c
    assert float(weights[labels].mean()) == pytest.approx(1.0)  # mean weight over the images is 1


def test_oversample_batches_draw_classes_uniformly_and_shuffle_keeps_frequencies():
    labels = torch.tensor([0] * 800 + [1] * 150 + [2] * 50)
    g = torch.Generator().manual_seed(0)
    balanced = torch.cat(list(run_epoch_batches(labels, 50, g, balanced=True)))
    shares = torch.bincount(labels[balanced], minlength=3).float() / len(balanced)
    torch.testing.assert_close(shares, torch.full((3,), 1 / 3), atol=0.04, rtol=0)
    plain = torch.cat(list(run_epoch_batches(labels, 50, g, balanced=False)))
    assert sorted(plain.tolist()) == list(range(1000))  # one pass over every image


def test_training_sets_add_only_what_the_variant_says(project):
    train = load_split(project.prepared, "train")
    n_classes = train.n_classes
    baseline = build_training_set(parse_variant("baseline", [4], GANS), train, TINY, 0)
    assert torch.equal(baseline.images, train.images) and baseline.class_weights is None
    weighted = build_training_set(parse_variant("weighted_loss", [4], GANS), train, TINY, 0)
    torch.testing.assert_close(weighted.class_weights, inverse_frequency_weights(train.labels, n_classes))
    assert build_training_set(parse_variant("oversample", [4], GANS), train, TINY, 0).balanced

    aug = build_training_set(parse_variant("standard_aug_4", [4], GANS), train, TINY, seed=0)
    assert torch.equal(aug.images[: len(train)], train.images)
    assert torch.bincount(aug.labels[len(train) :]).tolist() == [4] * n_classes
    again = build_training_set(parse_variant("standard_aug_4", [4], GANS), train, TINY, seed=0)
    other_seed = build_training_set(parse_variant("standard_aug_4", [4], GANS), train, TINY, seed=1)
    assert torch.equal(aug.images, again.images) and not torch.equal(aug.images, other_seed.images)

    variant = parse_variant("bagan_4", [4], GANS)
    gan = build_training_set(
        variant, train, TINY, 0, load_extra_synthetic(variant, train, project.synthetic, 1)
    )
    extra = gan.images[len(train) :]
    assert len(extra) == 4 * n_classes
    assert torch.equal(extra.flatten(1)[:, 0].long() - SYNTHETIC_VALUE, gan.labels[len(train) :])


def test_too_few_synthetic_images_is_a_clear_error(project):
    train = load_split(project.prepared, "train")
    with pytest.raises(CxraugError):  # interfaces.md: load_synthetic refuses fewer than n of a class
        load_extra_synthetic(parse_variant("bagan_7", [7], GANS), train, project.synthetic)


# ----------------------------------------------------------------------------------- training, early stop


def test_early_stopping_keeps_the_best_val_epoch(prepared, monkeypatch):
    """Scripted val AUCs 0.6, 0.8, 0.7, 0.75: with patience 2 training stops after epoch 4 and returns
    epoch 2's weights."""
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    script = iter([0.6, 0.8, 0.7, 0.75, 0.9, 0.9])
    real_auc = classifier_module.per_class_auc
    snapshots = {}

    def scripted_auc(scores, labels):
        real_auc(scores, labels)
        return np.full(val.n_classes, next(script))

    def snapshot(entry):
        snapshots[entry.epoch] = predict_proba(model_ref["model"], val.images, precision_ref["p"])

    model_ref, precision_ref = {}, {}
    real_build = classifier_module.build_vgg16

    def build_and_remember(*args, **kwargs):
        model_ref["model"] = real_build(*args, **kwargs)
        return model_ref["model"]

    real_pick = classifier_module.pick_precision

    def pick_and_remember(*args):
        precision_ref["p"] = real_pick(*args)
        return precision_ref["p"]

    monkeypatch.setattr(classifier_module, "per_class_auc", scripted_auc)
    monkeypatch.setattr(classifier_module, "build_vgg16", build_and_remember)
    monkeypatch.setattr(classifier_module, "pick_precision", pick_and_remember)
    trained = train_classifier(
        train.images,
        train.labels,
        val,
        TINY.model_copy(update={"epochs": 10, "patience": 2}),
        0,
        on_epoch=snapshot,
    )
    assert [h.epoch for h in trained.history] == [1, 2, 3, 4]
    assert trained.best_epoch == 2 and trained.best_val_macro_auc == pytest.approx(0.8)
    returned = predict_proba(trained.model, val.images, trained.precision)
    np.testing.assert_allclose(returned, snapshots[2], atol=1e-6)
    assert not np.allclose(returned, snapshots[4], atol=1e-4)


def test_training_resumes_from_its_checkpoint(prepared, tmp_path):
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    params = TINY.model_copy(update={"epochs": 3})
    straight = train_classifier(train.images, train.labels, val, params, seed=3)

    class Stop(Exception):
        pass

    def stop_after_two(entry):
        if entry.epoch == 2:
            raise Stop

    ckpt = Checkpointer(tmp_path / "c.pt", "same-settings")
    with pytest.raises(Stop):
        train_classifier(
            train.images, train.labels, val, params, seed=3, checkpoint=ckpt, on_epoch=stop_after_two
        )
    epochs_run = []
    resumed = train_classifier(
        train.images,
        train.labels,
        val,
        params,
        seed=3,
        checkpoint=ckpt,
        on_epoch=lambda e: epochs_run.append(e.epoch),
    )
    assert epochs_run == [2, 3]  # epoch 2 had not been checkpointed when it stopped: it is redone
    assert [h.val_macro_auc for h in resumed.history] == pytest.approx(
        [h.val_macro_auc for h in straight.history]
    )
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_steps_budget_gives_every_training_set_the_same_optimizer_steps(prepared):
    """A training set 8x the size gets the same optimizer steps and the same val schedule, not 8x."""
    train, val = load_split(prepared, "train"), load_split(prepared, "val")
    big_images, big_labels = train.images.repeat(8, 1, 1), train.labels.repeat(8)
    params = TINY.model_copy(update={"budget": "steps", "steps": 7, "eval_every": 3, "patience": 10})
    counted = {}
    for name, (images, labels) in {
        "small": (train.images, train.labels),
        "big": (big_images, big_labels),
    }.items():
        steps, rounds = [], []
        trained = train_classifier(
            images,
            labels,
            val,
            params,
            seed=0,
            on_step=steps.append,
            on_epoch=rounds.append,
        )
        counted[name] = (len(steps), [e.step for e in rounds], trained.steps, trained.images_seen)
    assert counted["small"][:3] == counted["big"][:3] == (7, [3, 6, 7], 7)
    assert counted["small"][3] == counted["big"][3] == 7 * TINY.batch_size
    assert len(big_labels) // TINY.batch_size > 7  # one epoch of the big set alone is more than the budget


def test_steps_budget_resumes_mid_epoch_with_the_same_batches(prepared):
    from cxraug.classifier.train import step_batches

    labels = load_split(prepared, "train").labels
    whole = [b.tolist() for b in step_batches(labels, 32, 5, False, 0, 40)]
    resumed = [b.tolist() for b in step_batches(labels, 32, 5, False, 13, 40)]
    assert resumed == whole[13:] and len(whole) == 40


# ------------------------------------------------------------------------------------------- the stage


def spy(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def test_stage_writes_every_output_and_an_mlflow_run(project, tracking_uri, monkeypatch):
    import mlflow

    trains, predicts = [], []
    spy(monkeypatch, seeds_module, "train_classifier", trains)
    spy(monkeypatch, seeds_module, "predict_proba", predicts)
    result = run_classify("bagan_4", params_with(seeds=[0, 1]), project)

    val, test = load_split(project.prepared, "val"), load_split(project.prepared, "test")
    # val and test are the real splits; the synthetic images went into training only
    for (train_images, _, val_arg, *_), _kw in trains:
        assert val_arg.images is not None and torch.equal(val_arg.images, val.images)
        synthetic_rows = (train_images.flatten(1) == train_images.flatten(1)[:, :1]).all(1)
        assert int(synthetic_rows.sum()) >= 4 * val.n_classes
    assert len(predicts) == 4  # 2 generator x 2 classifier seeds; the test split is scored once per run ...
    for (_, images, *_), _kw in predicts:
        assert torch.equal(images, test.images)
    for split in (val, test):
        flat = split.images.flatten(1).long()
        assert not ((flat >= SYNTHETIC_VALUE) & (flat < SYNTHETIC_VALUE + 5)).all(1).any()

    metrics = json.loads((project.metrics / "bagan_4.json").read_text())
    classes = list(test.classes)
    for key in ("per_class_auc", "per_class_auc_std", "per_class_auc_ci"):
        assert list(metrics[key]) == classes
    for c in classes:
        lo, hi = metrics["per_class_auc_ci"][c]
        assert lo <= metrics["per_class_auc"][c] <= hi
    assert metrics["runs"] == ["g0s0", "g0s1", "g1s0", "g1s1"] and metrics["generator_seeds"] == [0, 1]
    assert set(metrics["per_run"]) == set(metrics["runs"]) == set(metrics["per_run_auc"])
    assert metrics["bootstrap"]["n_units"] == 2  # runs clustered by generator replicate
    for r in metrics["per_run"].values():
        assert 0 < r["best_step"] <= r["steps"] and r["images_seen"] >= r["steps"] * TINY.batch_size // 2
    assert metrics["macro_auc_ci"][0] <= metrics["macro_auc"] <= metrics["macro_auc_ci"][1]
    train_counts = load_split(project.prepared, "train").class_counts().tolist()
    assert list(metrics["train_images"].values()) == [n + 4 for n in train_counts]
    assert metrics["eval_sets"] == {"val": split_md5(val), "test": split_md5(test)}
    assert metrics["variant"] == "bagan_4" and metrics["mlflow_run_id"] == result.run_id

    scores = np.load(project.scores / "bagan_4.npz")
    assert scores["scores"].shape == (4, len(test), len(classes)) and scores["scores"].dtype == np.float32
    assert scores["generator_seeds"].tolist() == [0, 0, 1, 1] and scores["runs"].tolist() == metrics["runs"]
    np.testing.assert_allclose(scores["scores"].sum(-1), 1, atol=1e-5)
    assert scores["labels"].tolist() == test.labels.tolist()
    assert scores["patient_ids"].tolist() == test.patient_ids.astype(str).tolist()
    assert scores["image_index"].tolist() == test.image_index.astype(str).tolist()
    assert scores["seeds"].tolist() == [0, 1, 0, 1] and scores["classes"].tolist() == classes
    # ... and the saved model is seed 0's best checkpoint: it reproduces seed 0's test scores
    model = load_classifier(project.models / "bagan_4.pt")
    np.testing.assert_allclose(
        predict_proba(model, test.images, predicts[0][0][2]), scores["scores"][0], atol=1e-5
    )
    # every run's weights are in the file too, named by its key (external-test scores them all)
    seeded = load_seed_classifiers(project.models / "bagan_4.pt")
    assert [seed for seed, _ in seeded] == [0, 1, 0, 1]
    assert saved_runs(project.models / "bagan_4.pt") == [("g0s0", 0), ("g0s1", 0), ("g1s0", 1), ("g1s1", 1)]
    for s, (_, net) in enumerate(seeded):
        np.testing.assert_allclose(
            predict_proba(net, test.images, predicts[0][0][2]), scores["scores"][s], atol=1e-5
        )

    roc = pd.read_csv(project.roc / "bagan_4.csv")
    assert list(roc.columns) == ["class", "fpr", "tpr"] and set(roc["class"]) == set(classes)

    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags["synthetic.seed1.run_id"] == "gan-run-1"
    assert len(run.data.tags["synthetic.seed0.index_md5"]) == 32
    history = client.get_metric_history(result.run_id, "g1s1/val_auc_macro")
    assert len(history) == 2  # one point per val check, at its optimizer step
    assert f"g0s0/val_auc/{slug(classes[-1])}" in run.data.metrics and "test_auc_macro" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "figures")}
    assert artifacts == {"figures/roc.png", "figures/confusion.png"}
    assert client.list_artifacts(result.run_id, "model")
    assert not (project.checkpoints / "bagan_4").exists()  # progress files removed once outputs exist


def test_stage_resumes_finished_seeds_and_the_mlflow_run(project, tracking_uri, monkeypatch):
    params = params_with(seeds=[0, 1], epochs=2)
    real_train = seeds_module.train_classifier

    class Stop(Exception):
        pass

    def stop_in_seed_1(*args, **kwargs):
        if args[4] == 1:
            raise Stop
        return real_train(*args, **kwargs)

    monkeypatch.setattr(seeds_module, "train_classifier", stop_in_seed_1)
    with pytest.raises(Stop):
        run_classify("baseline", params, project)
    first_run = json.loads((project.checkpoints / "baseline" / "run.json").read_text())["run_id"]
    trained_seeds = []

    def record(*args, **kwargs):
        trained_seeds.append(args[4])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(seeds_module, "train_classifier", record)
    result = run_classify("baseline", params, project)
    assert trained_seeds == [1]  # seed 0 was finished: its test scores are reused
    assert result.run_id == first_run
    assert [seed for seed, _ in load_seed_classifiers(project.models / "baseline.pt")] == [0, 1]


def test_stage_needs_the_synthetic_data_of_a_gan_variant(project, tracking_uri):
    with pytest.raises(
        CxraugError, match=r"opengan/seed0/index.csv: not found; run `dvc repro synthesize@opengan-0`"
    ):
        run_classify("opengan_4", params_with(), project)


# ------------------------------------------------------------------------------------------ CLI and DVC

TINY_PARAMS_YAML = """
prepare: {image_size: 32}
synthesize: {n_per_class: [4]}
classify: {seeds: [0], epochs: 1, batch_size: 32, width: 0.0625, bootstrap: 200, precision: fp32}
"""


def test_cli_rejects_an_unknown_variant_in_one_line(tmp_path):
    from tests.cli.test_cli import cxraug

    (tmp_path / "params.yaml").write_text(TINY_PARAMS_YAML)
    out = cxraug("classify", "--variant", "bagan_1000", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "valid: baseline, weighted_loss, oversample, standard_aug_4" in errors[0]


@pytest.mark.parametrize("verb", ["classify", "bench classify"])
def test_classify_verbs_explain_themselves(verb):
    from tests.cli.test_cli import cxraug

    out = cxraug(*verb.split(), "--help")
    assert out.returncode == 0 and "Usage" in out.stdout and len(out.stdout) > 300


@pytest.mark.slow  # two stages in subprocesses, each creating its MLflow store: ~1-2 min on 2 busy cores
def test_dvc_repro_runs_a_real_data_variant(tmp_path, demo_raw):

    from tests.helpers import dvc, make_project

    project = make_project(tmp_path / "project", TINY_PARAMS_YAML, raw=demo_raw)

    assert dvc(project, "commit", "-f", "-q", "data.dvc").returncode == 0
    listed = dvc(project, "stage", "list").stdout
    for stage in (
        "classify_real@baseline",
        "classify_aug@4",
        "classify_gan@bagan-4",
        "classify_gan@opengan-4",
    ):
        assert stage in listed
    first = dvc(project, "repro", "classify_real@baseline")
    assert first.returncode == 0, first.stderr
    for path in ("models/classifier/baseline.pt", "data/scores/baseline.npz", "plots/roc/baseline.csv"):
        assert (project / path).is_file()
    shown = json.loads(dvc(project, "metrics", "show", "--json", "metrics/classify/baseline.json").stdout)
    files = next(iter(shown.values()))["data"]
    assert "macro_auc" in files["metrics/classify/baseline.json"]["data"]
    assert "didn't change" in dvc(project, "repro", "classify_real@baseline").stdout
