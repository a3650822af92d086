"""The per-generator filter rules: argmax keeps what the model ranks first, none keeps everything,
threshold cuts at the score; the defaults are the paper's (BAGAN argmax, OpenGAN unfiltered)."""

from __future__ import annotations

import pytest
import torch

from cxraug.core.config import SynthesisFilterParams, SynthesizeParams
from cxraug.core.errors import CxraugError
from cxraug.synthesis import draw as synth
from cxraug.synthesis.filters import FilterRule, filter_rule
from tests.synthesis.test_synthesize import FakeProposer


class RankingProposer(FakeProposer):
    """FakeProposer whose model puts the intended class on top exactly for candidates with an even level
    (whatever their score), so argmax and threshold select different images."""

    def propose_ranked(self, class_index, n, generator):
        images, scores = self.propose(class_index, n, generator)
        return images, scores, images[:, 1, 1] % 2 == 0


def _draws(rule, proposer=None, wanted=15):
    proposer = proposer or RankingProposer(ceilings=(1.0, 1.0, 1.0))
    return synth.synthesize(proposer, wanted, rule, 4.0, 7, torch.Generator().manual_seed(3))


def test_argmax_keeps_exactly_the_candidates_ranked_first_and_counts_their_rate():
    for d in _draws(FilterRule("argmax")):
        assert d.accepted == 15 and bool((d.images[:, 1, 1] % 2 == 0).all())
        passed = int(d.candidate_passed.sum())
        assert d.passed == passed and d.acceptance_rate == pytest.approx(passed / d.tried)
        assert 0.35 < d.acceptance_rate < 0.65 and d.summary()["filter"] == "argmax"


def test_none_keeps_every_candidate_and_threshold_cuts_at_the_score():
    for d in _draws(FilterRule("none")):
        # batches of 7, the last shortened to what is wanted: 7 + 7 + 1, nothing drawn to be thrown away
        assert d.accepted == 15 and d.tried == 15 and d.acceptance_rate == 1
    for d in _draws(FilterRule("threshold", 0.6)):
        assert bool((d.scores >= 0.6).all()) and d.passed == int((d.candidate_scores >= 0.6).sum())


def test_argmax_on_a_model_that_cannot_rank_is_a_one_line_error():
    with pytest.raises(CxraugError, match="argmax needs a generator that ranks classes"):
        _draws(FilterRule("argmax"), proposer=FakeProposer())


def test_defaults_follow_the_paper_and_an_unlisted_generator_uses_the_threshold():
    params = SynthesizeParams().filter
    assert filter_rule(params, "bagan") == FilterRule("argmax", 0.5)
    assert filter_rule(params, "opengan").mode == "none"
    assert filter_rule(params, "diffusion").mode == "none"  # no discriminator: its score is always 1
    assert filter_rule(params, "fake") == FilterRule("threshold", params.threshold)
    custom = SynthesisFilterParams(per_gan={"bagan": {"mode": "threshold", "threshold": 0.3}}, threshold=0.9)
    assert filter_rule(custom, "bagan") == FilterRule("threshold", 0.3)
