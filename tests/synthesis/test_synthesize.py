"""Synthesis with a fake proposer whose images encode their own score, so every claim can be checked."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxraug.core.config import SynthesizeParams
from cxraug.core.errors import CxraugError
from cxraug.gans import registry
from cxraug.stages import synthesize as synth_stage
from cxraug.synthesis import draw as synth
from cxraug.synthesis.files import load_synthetic, write_synthetic

SIZE = 8


class FakeProposer:
    """Candidate i of class c: a flat image at a random level L in 0..255 with pixel (0, 0) = c, scored
    L / 255 * ceiling[c]; a low ceiling makes a class rarely (or never) pass the threshold."""

    def __init__(self, ceilings=(1.0, 1.0, 0.55), classes=("No Finding", "Effusion", "Nodule")):
        self.classes = tuple(classes)
        self.ceilings = ceilings
        self.calls: list[tuple[int, int]] = []

    def propose(self, class_index, n, generator):
        self.calls.append((class_index, n))
        levels = torch.randint(0, 256, (n,), generator=generator)
        images = levels.to(torch.uint8)[:, None, None].repeat(1, SIZE, SIZE)
        images[:, 0, 0] = class_index
        return images, levels.float() / 255 * self.ceilings[class_index]

    def score_of(self, image: np.ndarray) -> float:
        return float(image[1, 1]) / 255 * self.ceilings[int(image[0, 0])]

    def tried(self, class_index: int) -> int:
        return sum(n for c, n in self.calls if c == class_index)


def make_fake(model_dir: Path, device, precision="auto") -> FakeProposer:
    return FakeProposer()


def draw(proposer=None, wanted=20, threshold=0.5, factor=3.0, batch=7, seed=0):
    proposer = proposer or FakeProposer()
    return synth.synthesize(proposer, wanted, threshold, factor, batch, torch.Generator().manual_seed(seed))


def test_every_written_image_passes_the_threshold_and_carries_its_own_score(tmp_path):
    proposer = FakeProposer()
    index = write_synthetic(draw(proposer, threshold=0.6), tmp_path / "out")
    on_disk = pd.read_csv(tmp_path / "out" / "index.csv")
    pd.testing.assert_frame_equal(on_disk, index)
    assert (on_disk["score"] >= 0.6).all()
    files = {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png")}
    assert files == set(on_disk["file"])
    for row in on_disk.to_dict("records"):
        image = np.asarray(Image.open(tmp_path / "out" / row["file"]))
        assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE)
        assert image[0, 0] == row["label"] and proposer.classes[row["label"]] == row["class"]
        assert proposer.score_of(image) == pytest.approx(row["score"], abs=1e-6)
    assert (on_disk["label"] == 0).sum() == (on_disk["label"] == 1).sum() == 20


def test_accepted_are_the_first_passing_candidates_in_draw_order():
    class Recording(FakeProposer):
        seen: list = []

        def propose(self, class_index, n, generator):
            images, scores = super().propose(class_index, n, generator)
            self.seen.append((class_index, images, scores))
            return images, scores

    proposer = Recording()
    draws = draw(proposer, threshold=0.5)
    for c, d in enumerate(draws):
        candidates = torch.cat([s for k, _, s in proposer.seen if k == c])
        passing = candidates[candidates >= 0.5][: d.wanted]
        assert torch.equal(d.scores, passing)
        assert torch.equal(d.candidate_scores, candidates)


def test_cap_on_tries_is_respected_and_the_shortfall_reported():
    proposer = FakeProposer(ceilings=(1.0, 1.0, 0.55))
    draws = draw(proposer, wanted=20, factor=3.0, batch=7)
    cap = 60
    for c, d in enumerate(draws):
        assert proposer.tried(c) == d.tried <= cap
        assert all(n <= 7 for k, n in proposer.calls if k == c)
    full, rare = draws[0], draws[2]
    assert full.accepted == 20 and full.shortfall == 0 and full.tried < cap
    assert rare.tried == cap  # the last batch was shortened to land exactly on the cap
    assert 0 < rare.accepted < 20 and rare.shortfall == 20 - rare.accepted
    assert rare.acceptance_rate == pytest.approx(rare.passed / cap)
    assert rare.summary()["shortfall"] == rare.shortfall


def test_draws_are_deterministic_per_seed_and_classes_do_not_disturb_each_other():
    a, b, c = draw(seed=1), draw(seed=1), draw(seed=2)
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.images, y.images) and torch.equal(x.candidate_scores, y.candidate_scores)
    assert not torch.equal(a[0].candidate_scores[:20], c[0].candidate_scores[:20])
    # class 0 needs many more tries at a stricter ceiling; the other classes' draws must not move
    harder = draw(FakeProposer(ceilings=(0.6, 1.0, 0.55)), seed=1)
    assert harder[0].tried > a[0].tried
    assert torch.equal(harder[1].images, a[1].images) and torch.equal(harder[2].images, a[2].images)


def test_load_synthetic_returns_the_first_n_per_class_in_acceptance_order(tmp_path):
    draws = draw(FakeProposer(ceilings=(1.0, 1.0, 1.0)))
    write_synthetic(draws, tmp_path / "out")
    images, labels = load_synthetic(tmp_path / "out", 5, classes=FakeProposer().classes)
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert torch.equal(labels, torch.tensor([0] * 5 + [1] * 5 + [2] * 5))
    assert torch.equal(images, torch.cat([d.images[:5] for d in draws]))
    with pytest.raises(CxraugError, match="holds 20 images of class 'No Finding', 21 are needed"):
        load_synthetic(tmp_path / "out", 21)
    with pytest.raises(CxraugError, match="do not match the classes"):
        load_synthetic(tmp_path / "out", 5, classes=("No Finding", "Nodule", "Effusion"))
    with pytest.raises(CxraugError, match="synthesize@nowhere"):
        load_synthetic(tmp_path / "nowhere", 5)


def test_a_failure_mid_write_leaves_the_previous_output_intact(tmp_path):
    out = tmp_path / "out"
    write_synthetic(draw(seed=0), out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    broken = draw(seed=5)
    broken[1].scores = broken[1].scores[:-1]  # one image without a score: the writer fails half-way
    with pytest.raises(ValueError):
        write_synthetic(broken, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left behind


def test_a_proposer_breaking_the_protocol_is_named():
    class Floats(FakeProposer):
        def propose(self, class_index, n, generator):
            images, scores = super().propose(class_index, n, generator)
            return images.float(), scores

    with pytest.raises(ValueError, match="Floats.propose must return uint8"):
        draw(Floats())

    class Logits(FakeProposer):
        def propose(self, class_index, n, generator):
            images, scores = super().propose(class_index, n, generator)
            return images, scores * 4 - 2

    with pytest.raises(ValueError, match="outside"):
        draw(Logits())


@pytest.fixture
def fake_registry(monkeypatch, tmp_path):
    fake = registry.Generator("fake", "Fake", train=None, load_proposer=make_fake, searched=())
    monkeypatch.setitem(registry.GENERATORS, "fake", fake)
    model_dir = tmp_path / "models" / "fake"
    model_dir.mkdir(parents=True)
    (model_dir / "meta.json").write_text(json.dumps({"mlflow_run_id": "trainrun123"}))
    return model_dir


def stage_params(**filter_) -> SynthesizeParams:
    filt = {"threshold": 0.5, "max_tries_factor": 3.0} | filter_
    return SynthesizeParams(n_per_class=[5, 20], filter=filt, batch_size=16, device="cpu", precision="fp32")


def test_stage_writes_metrics_and_logs_acceptance_to_mlflow(tracking_uri, fake_registry, tmp_path):
    import mlflow

    out, metrics_path = tmp_path / "data" / "synthetic" / "fake", tmp_path / "metrics" / "fake.json"
    result = synth_stage.run_synthesize(stage_params(), "fake", fake_registry, out, metrics_path)
    metrics = json.loads(metrics_path.read_text())
    per_class = metrics["per_class"]
    assert set(per_class) == {"No Finding", "Effusion", "Nodule"}
    assert per_class["No Finding"]["accepted"] == 20 and per_class["No Finding"]["shortfall"] == 0
    nodule = per_class["Nodule"]
    assert 5 <= nodule["accepted"] < 20 and nodule["tried"] == 60  # short of 20, not of 5: no failure
    assert metrics["shortfall"] == {"Nodule": 20 - nodule["accepted"]}
    assert nodule["acceptance_rate"] == pytest.approx(result.draws[2].acceptance_rate, abs=1e-6)
    assert nodule["mean_score"] >= 0.5
    assert metrics["gan_run_id"] == "trainrun123" and metrics["mlflow_run_id"] == result.run_id
    assert len(pd.read_csv(out / "index.csv")) == result.accepted == 40 + nodule["accepted"]

    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.tags["gan.run_id"] == "trainrun123" and run.data.tags["dvc.stage"] == "synthesize@fake-0"
    assert run.data.metrics["acceptance_rate.nodule"] == pytest.approx(nodule["acceptance_rate"], abs=1e-6)
    assert run.data.metrics["shortfall.nodule"] == 20 - nodule["accepted"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert {"score_histograms.png", "index.csv", "accepted", "rejected"} <= artifacts


def test_stage_fails_in_one_line_when_a_class_misses_the_smallest_n(tracking_uri, fake_registry, tmp_path):
    out, metrics_path = tmp_path / "out", tmp_path / "m.json"
    with pytest.raises(CxraugError) as err:
        synth_stage.run_synthesize(stage_params(threshold=0.56), "fake", fake_registry, out, metrics_path)
    message = str(err.value)
    assert "\n" not in message and "{'Nodule': 0}" in message and "filter.threshold" in message
    # what was accepted is still written and counted, so the shortfall can be inspected
    assert json.loads(metrics_path.read_text())["shortfall"]["Nodule"] == 20
    assert set(pd.read_csv(out / "index.csv")["class"]) == {"No Finding", "Effusion"}


def test_unseen_class_from_exemplars_of_any_size_and_mode(tracking_uri, monkeypatch, tmp_path):
    received = {}

    def exemplar_proposer(model_dir, exemplars, label, device):
        received.update(exemplars=exemplars, label=label)
        return FakeProposer(ceilings=(0.2,), classes=(label,))  # every score < the 0.5 threshold

    opengan = registry.GENERATORS["opengan"]
    monkeypatch.setitem(
        registry.GENERATORS, "opengan", dataclasses.replace(opengan, load_exemplar_proposer=exemplar_proposer)
    )
    folder = tmp_path / "exemplars"
    folder.mkdir()
    Image.new("RGB", (100, 80), (200, 10, 10)).save(folder / "a.png")
    Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16)).save(folder / "b.png")
    Image.new("L", (64, 64), 7).save(folder / "c.jpg")
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    (tmp_path / "models").mkdir()
    result = synth_stage.run_exemplars(
        stage_params(), "opengan", tmp_path / "models", folder, "Pneumothorax", 12, 32, tmp_path / "new", None
    )
    assert received["label"] == "Pneumothorax"
    assert received["exemplars"].dtype == torch.uint8 and received["exemplars"].shape == (3, 32, 32)
    index = pd.read_csv(tmp_path / "new" / "index.csv")
    assert len(index) == result.accepted == 12 and set(index["label"]) == {0}
    # OpenGAN is unfiltered by default: no score calibrated on trained classes vetoes an unseen one
    assert result.draws[0].acceptance_rate == 1 and result.draws[0].scores.max() < 0.5
    assert index["file"].str.startswith("pneumothorax/").all()


def cli(monkeypatch, capsys, *args) -> tuple[int, str]:
    from cxraug.cli.app import main

    monkeypatch.setattr(sys, "argv", ["cxraug", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gan", "bagan", "--models", "/no/such/dir"], "run `dvc repro train_bagan` first"),
        (["--gan", "stylegan"], "unknown GAN 'stylegan'"),
        (["--gan", "opengan", "--label", "X"], "give them with --exemplars"),
        (
            ["--gan", "bagan", "--exemplars", "x", "--label", "X", "--n", "3", "--out", "o"],
            "needs --gan opengan",
        ),
        (["--gan", "opengan", "--exemplars", "x", "--label", "X"], "needs --label NAME, --n N and --out"),
    ],
)
def test_cli_mistakes_are_one_line_errors(monkeypatch, capsys, tmp_path, args, message):
    params = tmp_path / "params.yaml"
    params.write_text("synthesize:\n  device: cpu\n")
    code, err = cli(monkeypatch, capsys, "synthesize", "--params", str(params), *args)
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("verb", [["synthesize"], ["report"], ["bench", "synthesize"]])
def test_verbs_explain_themselves(monkeypatch, capsys, verb):
    from cxraug.cli.app import main

    monkeypatch.setattr(sys, "argv", ["cxraug", *verb, "--help"])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and "Usage" in out and len(out) > 300
