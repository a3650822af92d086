"""The filter loop's numbers against a sequential walk over the candidate stream: what is kept, what is
counted (tries, passes, near-copies dropped, rejected and copies shown), the summary synthesize records,
and the protocol errors word for word."""

from __future__ import annotations

import math

import pytest
import torch

from cxraug.core.config import SynthesisFilterParams
from cxraug.core.errors import CxraugError
from cxraug.synthesis import draw as synth
from cxraug.synthesis.filters import FilterRule, filter_rule
from tests.synthesis.test_filters import RankingProposer
from tests.synthesis.test_synthesize import FakeProposer


class Recording(FakeProposer):
    """Keeps every candidate it hands out, per class, in draw order."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: dict[int, list] = {}

    def propose(self, class_index, n, generator):
        images, scores = super().propose(class_index, n, generator)
        self.seen.setdefault(class_index, []).append((images, scores))
        return images, scores

    def stream(self, c):
        return torch.cat([i for i, _ in self.seen[c]]), torch.cat([s for _, s in self.seen[c]])


def is_copy(images):  # a "near-copy" is any candidate at an even grey level
    return images[:, 1, 1] % 2 == 0


def walk(images, scores, wanted, threshold, copies_count):
    """The documented policy, one candidate at a time."""
    kept, copies, rejected = [], [], []
    for i in range(len(scores)):
        passes = bool(scores[i] >= threshold)
        if not passes:
            rejected.append(i)
        elif len(kept) < wanted:
            (copies if copies_count and bool(is_copy(images[i : i + 1])) else kept).append(i)
    return kept, copies, rejected


@pytest.mark.parametrize("near_copy", [None, is_copy])
def test_kept_counted_and_shown_candidates_equal_a_sequential_walk(near_copy):
    proposer = Recording(ceilings=(1.0, 0.7))
    proposer.classes = ("A", "B")
    draws = synth.synthesize(proposer, 50, 0.5, 4.0, 9, torch.Generator().manual_seed(1), near_copy)
    shown_capped = []
    for c, d in enumerate(draws):
        images, scores = proposer.stream(c)
        kept, copies, rejected = walk(images, scores, 50, 0.5, near_copy is not None)
        shown_capped.append(len(copies) > synth.KEEP_REJECTED)
        assert d.tried == len(scores) and torch.equal(d.candidate_scores, scores)
        assert torch.equal(d.images, images[kept]) and torch.equal(d.scores, scores[kept])
        assert torch.equal(d.candidate_passed, scores >= 0.5) and d.passed == int((scores >= 0.5).sum())
        assert torch.equal(d.rejected, images[rejected[: synth.KEEP_REJECTED]])
        assert len(rejected) > synth.KEEP_REJECTED  # the cap on what is shown is exercised
        if near_copy is None:
            assert d.near_copies is None and d.copies is None
        else:
            assert d.near_copies == len(copies) > 0
            assert torch.equal(d.copies, images[copies[: synth.KEEP_REJECTED]])
        # the last batch is cut at the cap; the class stops with its batch once it is complete
        assert d.tried == min(200, 9 * math.ceil((kept[-1] + 1) / 9)) if len(kept) == 50 else d.tried == 200
    assert near_copy is None or any(shown_capped)  # the cap on the copies shown is exercised


def test_summary_records_the_numbers_of_the_draw():
    proposer = Recording(ceilings=(1.0, 0.55))
    proposer.classes = ("A", "B")
    draws = synth.synthesize(proposer, 20, 0.5, 1.5, 7, torch.Generator().manual_seed(0), is_copy)
    for c, d in enumerate(draws):
        _, scores = proposer.stream(c)
        passed = int((scores >= 0.5).sum())
        assert d.summary() == {
            "accepted": len(d.scores),
            "wanted": 20,
            "shortfall": 20 - len(d.scores),
            "tried": 30,  # ceil(1.5 x 20): neither class completes here
            "passed": passed,  # near-copies pass the rule too: they are dropped afterwards
            "acceptance_rate": round(passed / 30, 6),
            "filter": "threshold 0.5",
            "mean_score": round(float(d.scores.mean()), 6),
            "mean_candidate_score": round(float(scores.mean()), 6),
            "near_copies_dropped": d.near_copies,
        }
        assert d.shortfall > 0 and d.near_copies > 0
        assert round(passed / 30, 6) != round(passed / 30, 7)  # 6 decimals, as recorded
    assert (
        "near_copies_dropped"
        not in synth.synthesize(FakeProposer(), 3, 0.5, 2, 7, torch.Generator())[0].summary()
    )


def test_a_class_with_nothing_drawn_has_empty_typed_fields():
    d = synth.draw_class(FakeProposer(), 0, 0, 0.5, 0, 7, torch.Generator(), is_copy)
    assert d.images.shape == d.rejected.shape == d.copies.shape == (0, 0, 0)
    assert d.images.dtype == d.rejected.dtype == d.copies.dtype == torch.uint8
    assert d.scores.shape == d.candidate_scores.shape == d.candidate_passed.shape == (0,)
    assert d.candidate_passed.dtype == torch.bool and d.near_copies == 0
    summary = d.summary()
    assert summary["mean_score"] is None and summary["mean_candidate_score"] is None
    assert summary["tried"] == 0 and math.isnan(summary["acceptance_rate"])


def test_a_class_that_never_passes_reports_no_mean_score():
    d = synth.draw_class(FakeProposer(ceilings=(0.1,)), 0, 5, 0.5, 12, 7, torch.Generator().manual_seed(0))
    assert d.tried == 12 and d.accepted == 0 and d.summary()["mean_score"] is None
    assert d.summary()["mean_candidate_score"] == round(float(d.candidate_scores.mean()), 6)


def test_threshold_is_recorded_only_for_threshold_mode():
    def threshold(rule):
        return synth.draw_class(
            RankingProposer(ceilings=(1.0,)), 0, 5, rule, 10, 7, torch.Generator()
        ).threshold

    assert threshold(FilterRule("threshold", 0.3)) == 0.3
    assert math.isnan(threshold(FilterRule("none"))) and math.isnan(threshold(FilterRule("argmax")))


def test_each_class_can_be_regenerated_alone_from_the_callers_seed():
    proposer = FakeProposer()
    draws = synth.synthesize(proposer, 10, 0.5, 3.0, 7, torch.Generator().manual_seed(8))
    seeds = torch.randint(0, 2**62, (3,), generator=torch.Generator().manual_seed(8)).tolist()
    for c, d in enumerate(draws):
        alone = synth.draw_class(FakeProposer(), c, 10, 0.5, 30, 7, torch.Generator().manual_seed(seeds[c]))
        assert torch.equal(d.images, alone.images) and torch.equal(d.candidate_scores, alone.candidate_scores)


def test_the_cap_on_tries_rounds_up_and_candidate_labels_are_the_requested_class():
    proposer = Recording(ceilings=(0.0, 0.0, 0.0))  # nothing passes: every class draws to the cap
    draws = synth.synthesize(proposer, 3, 0.5, 2.5, 7, torch.Generator().manual_seed(0))
    assert [d.tried for d in draws] == [8, 8, 8]  # ceil(2.5 x 3)
    assert [[n for _, n in [(c, len(s)) for _, s in proposer.seen[c]]] for c in range(3)] == [[7, 1]] * 3
    for c in range(3):
        assert bool((proposer.stream(c)[0][:, 0, 0] == c).all())


def test_argmax_draws_follow_the_callers_seed():
    a = synth.synthesize(RankingProposer(), 5, FilterRule("argmax"), 3.0, 7, torch.Generator().manual_seed(4))
    b = synth.synthesize(RankingProposer(), 5, FilterRule("argmax"), 3.0, 7, torch.Generator().manual_seed(4))
    assert all(torch.equal(x.images, y.images) for x, y in zip(a, b, strict=True))


def test_a_score_of_exactly_one_or_the_threshold_passes_and_nan_never_does():
    class Fixed(FakeProposer):
        def propose(self, class_index, n, generator):
            images = torch.zeros(n, 8, 8, dtype=torch.uint8)
            return images, torch.tensor([1.0, 0.5, float("nan"), 0.4999])[:n]

    d = synth.draw_class(Fixed(), 0, 4, 0.5, 4, 4, torch.Generator())
    assert d.scores.tolist() == [1.0, 0.5] and d.candidate_passed.tolist() == [True, True, False, False]


class Broken(FakeProposer):
    def __init__(self, images=None, scores=None) -> None:
        super().__init__()
        self.images, self.scores = images, scores

    def propose(self, class_index, n, generator):
        images, scores = super().propose(class_index, n, generator)
        return self.images(images) if self.images else images, self.scores(scores) if self.scores else scores


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (
            Broken(images=lambda x: x.float()),
            "Broken.propose must return uint8 images [n, H, W], got (7, 8, 8)",
        ),
        (
            Broken(images=lambda x: x.numpy()),
            "Broken.propose must return uint8 images [n, H, W], got (7, 8, 8)",
        ),
        (Broken(images=lambda x: x.tolist()), "Broken.propose must return uint8 images [n, H, W], got [["),
        (Broken(images=lambda x: x[:-1]), "Broken.propose(7) returned 6 images and scores (7,)"),
        (Broken(scores=lambda s: s[:-1]), "Broken.propose(7) returned 7 images and scores (6,)"),
        (Broken(scores=lambda s: s + 0.5), "Broken.propose returned scores outside [0, 1]: "),
    ],
)
def test_protocol_errors_say_what_broke(broken, message):
    with pytest.raises(ValueError) as caught:
        synth.synthesize(broken, 5, 0.5, 3.0, 7, torch.Generator().manual_seed(0))
    assert str(caught.value).replace("torch.Size([7, 8, 8])", "(7, 8, 8)").startswith(message)


def test_filter_rules_describe_themselves_and_refuse_unknown_modes():
    assert [FilterRule(m, 0.25).describe() for m in ("threshold", "argmax", "none")] == [
        "threshold 0.25",
        "argmax",
        "none",
    ]
    with pytest.raises(
        CxraugError, match=r"^filter mode must be one of argmax, threshold, none, got 'best'$"
    ):
        FilterRule("best")
    with pytest.raises(CxraugError) as caught:
        FilterRule("argmax").propose(FakeProposer(), 0, 3, torch.Generator())
    assert str(caught.value) == (
        "filter mode argmax needs a generator that ranks classes; FakeProposer does not "
        "(use threshold or none)"
    )
    assert filter_rule(SynthesisFilterParams(threshold=0.9), "unlisted") == FilterRule("threshold", 0.9)


def test_near_copies_are_counted_until_the_class_is_complete():
    class Scripted(FakeProposer):  # grey levels per batch: 201 passes, 200 passes but is a copy, 51 fails
        batches = [[201, 51, 51], [51, 51, 51], [200, 200, 51], [200, 201, 200]]

        def propose(self, class_index, n, generator):
            levels = torch.tensor(self.batches.pop(0), dtype=torch.uint8)
            return levels[:, None, None].repeat(1, 8, 8), levels.float() / 255

    d = synth.draw_class(Scripted(ceilings=(1.0,)), 0, 2, 0.5, 12, 3, torch.Generator(), is_copy)
    # batch 2 passes nothing; batch 3 only copies (both counted: the class still needs one); in batch 4
    # the copy before the completing original counts, the one after it does not
    assert d.tried == 12 and d.accepted == 2 and d.near_copies == 3
    assert d.images[:, 1, 1].tolist() == [201, 201] and d.copies[:, 1, 1].tolist() == [200, 200, 200]
