"""The filter-sensitivity sets (`cxraug synthesize --filter-mode`): the mode really changes which images are
kept, a mode that cannot fill n per class writes what passed and records the shortfall without failing,
and synthesize.precision reaches the generator's proposer."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxraug.core import layout
from cxraug.core.config import Params
from cxraug.core.errors import CxraugError
from cxraug.gans import registry
from cxraug.stages import synthesize as synth_stage
from tests.synthesis.test_filters import RankingProposer

N = 12
THRESHOLD = 0.6


class NeverTop(RankingProposer):
    """Ranks the intended class first for even levels, except for class 2, which it never ranks first (a D
    at chance that calls everything one class), and class 2's scores never reach THRESHOLD."""

    def __init__(self):
        super().__init__(ceilings=(1.0, 1.0, 0.5))

    def propose_ranked(self, class_index, n, generator):
        images, scores, top = super().propose_ranked(class_index, n, generator)
        return images, scores, top & (class_index != 2)


@pytest.fixture
def ranking_registry(monkeypatch, tmp_path):
    made = []

    def load(model_dir, device, precision="auto"):
        made.append(precision)
        return NeverTop() if (model_dir / "never_top").exists() else RankingProposer(ceilings=(1.0, 1.0, 1.0))

    fake = registry.Generator("fake", "Fake", train=None, load_proposer=load, searched=())
    monkeypatch.setitem(registry.GENERATORS, "fake", fake)
    model_dir = tmp_path / "models" / "fake" / "seed0"
    model_dir.mkdir(parents=True)
    return model_dir, made


def params(**synthesize) -> Params:
    return Params.model_validate(
        {
            "synthesize": {"n_per_class": [5, 50], "batch_size": 8, "device": "cpu", "precision": "fp32"}
            | synthesize,
            "filter_sensitivity": {
                "gan": "fake",
                "n_per_class": N,
                "modes": ["none", "argmax", "threshold"],
                "threshold": THRESHOLD,
            },
        }
    )


def draw_set(model_dir, tmp_path, mode: str, p: Params | None = None):
    name = layout.filter_set("fake", mode)
    out, metrics = tmp_path / "data/synthetic" / name / "seed0", tmp_path / "metrics" / name / "seed0.json"
    paths = synth_stage.Paths(gan="fake", models=model_dir, out=out, metrics=metrics, filter_mode=mode)
    result = synth_stage.run(p or params(), paths)
    index = pd.read_csv(out / "index.csv")
    images = {row["file"]: np.asarray(Image.open(out / row["file"])) for row in index.to_dict("records")}
    return result, index, images, json.loads(metrics.read_text())


def test_the_filter_mode_decides_which_candidates_are_kept(tracking_uri, ranking_registry, tmp_path):
    model_dir, _ = ranking_registry
    kept = {}
    for mode in ("none", "argmax", "threshold"):
        result, index, images, metrics = draw_set(model_dir, tmp_path, mode)
        levels = np.array([img[1, 1] for img in images.values()])
        scores = levels / 255  # RankingProposer's score, computed from the pixel itself
        assert result.stage == f"synthesize_filter@{mode}-0"
        assert index.groupby("label").size().tolist() == [N, N, N]  # n from filter_sensitivity
        assert metrics["filter"]["mode"] == mode and metrics["wanted_per_class"] == N
        if mode == "argmax":  # the intended class ranked first: exactly the even levels
            assert (levels % 2 == 0).all()
        if mode == "threshold":
            assert (scores >= THRESHOLD - 1e-6).all() and metrics["filter"]["threshold"] == THRESHOLD
        if mode == "none":  # the first N candidates, whatever their rank or score
            assert metrics["acceptance_rate"] == 1 and metrics["tried"] == 3 * N  # no more drawn than kept
            assert (levels % 2 == 1).any() and (scores < THRESHOLD).any()
        kept[mode] = tuple(levels.tolist())
    assert len(set(kept.values())) == 3  # three different image sets


def test_a_mode_that_cannot_fill_n_writes_what_passed_and_counts_the_shortfall(
    tracking_uri, ranking_registry, tmp_path
):
    model_dir, _ = ranking_registry
    (model_dir / "never_top").touch()
    for mode in ("argmax", "threshold"):  # the study's stage would fail: class 2 has none of min(n) = 5
        result, index, _, metrics = draw_set(model_dir, tmp_path, mode)
        per_class = metrics["per_class"]
        nodule = per_class["Nodule"]
        assert nodule["accepted"] == 0 and nodule["passed"] == 0 and nodule["tried"] == 20 * N
        assert metrics["shortfall"] == {"Nodule": N} and set(index["class"]) == {"No Finding", "Effusion"}
        assert per_class["No Finding"]["accepted"] == N
        assert "Nodule 0/12" in result.summary  # counted where the user sees it


def test_the_override_is_checked(tracking_uri, ranking_registry, tmp_path):
    model_dir, _ = ranking_registry
    only_two = params().model_copy(
        update={"filter_sensitivity": params().filter_sensitivity.model_copy(update={"modes": ["none"]})}
    )
    with pytest.raises(CxraugError, match="not in filter_sensitivity.modes"):
        draw_set(model_dir, tmp_path, "argmax", only_two)
    paths = synth_stage.Paths(gan="bagan", models=model_dir, out=tmp_path / "o", filter_mode="none")
    with pytest.raises(CxraugError, match="varies filter_sensitivity.gan"):
        synth_stage.run(params(), paths)
    p = params()
    assert synth_stage.sensitivity_params(p, "argmax").filter.per_gan["fake"].mode == "argmax"
    assert "fake" not in p.synthesize.filter.per_gan  # the study's own rule is left alone


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_synthesize_precision_reaches_the_proposer(tracking_uri, ranking_registry, tmp_path, precision):
    model_dir, made = ranking_registry
    p = params(precision=precision)
    synth_stage.run_synthesize(p.synthesize, "fake", model_dir, tmp_path / "out", None)
    assert made == [precision]


def test_bagan_load_proposer_uses_the_precision_it_is_given(monkeypatch, tmp_path):
    from cxraug.gans.bagan import proposer as bagan

    asked = []

    def pick(device, mode="auto"):
        asked.append(mode)
        raise RuntimeError("stop")  # the nets need not be built to see the choice

    (tmp_path / "bagan.json").write_text(json.dumps({"architecture": {}, "classes": []}))
    monkeypatch.setattr(bagan, "Architecture", lambda **_: None)
    monkeypatch.setattr(bagan, "pick_precision", pick)
    with pytest.raises(RuntimeError, match="stop"):
        bagan.load_proposer(tmp_path, torch.device("cpu"), "fp32")
    assert asked == ["fp32"]
