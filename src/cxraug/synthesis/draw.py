"""The filter loop of synthesis: draw class-conditional candidates from a `Proposer` in batches and keep
those that pass the generator's filter rule (synthesis/filters.py: argmax, threshold or none).

Policy, per class:
- candidates are drawn in batches of `batch_size` until `wanted` pass the rule or
  ceil(max_tries_factor x wanted) candidates have been drawn (the last batch is shortened to the cap);
- accepted images keep their draw order, so the first n of a class are what a variant with n synthetic
  images per class trains on (`synthesis.files.load_synthetic`), and the n=1000 set is a prefix of the
  n=3000 set;
- each class draws from its own generator, seeded from the caller's: a class's images do not change when
  another class needs more or fewer tries;
- a `near_copy` test (metrics/memorisation.NearCopyFilter) drops passing candidates that nearly copy a
  real training image, and counts them; without one nothing about the draws changes.
The stage around it (files, metrics, MLflow, shortfalls) is stages/synthesize.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cxraug.core.config import SynthesizeParams
from cxraug.core.errors import CxraugError
from cxraug.core.runtime import progress
from cxraug.data.datasets import load_split
from cxraug.gans.registry import Proposer
from cxraug.metrics.memorisation import NearCopyFilter, patient_codes
from cxraug.synthesis.filters import FilterRule

KEEP_REJECTED = 32  # rejected candidates kept per class, only to show them beside the accepted ones


@dataclass
class ClassDraw:
    """One class's outcome: the accepted images in draw order and every candidate's score."""

    name: str
    label: int
    wanted: int
    images: torch.Tensor  # uint8 [accepted, H, W]
    scores: torch.Tensor  # float32 [accepted]
    candidate_scores: torch.Tensor  # float32 [tried], every candidate drawn, in draw order
    rejected: torch.Tensor  # uint8 [<= KEEP_REJECTED, H, W], the first rejected candidates
    threshold: float
    candidate_passed: torch.Tensor | None = None  # bool [tried]: each candidate passed the rule
    rule: str = "threshold"  # FilterRule.describe() of the rule applied
    near_copies: int | None = None  # passing candidates dropped as near-copies; None: filter off
    copies: torch.Tensor | None = None  # uint8 [<= KEEP_REJECTED, H, W], the first of them

    @property
    def accepted(self) -> int:
        return len(self.scores)

    @property
    def tried(self) -> int:
        return len(self.candidate_scores)

    @property
    def passed(self) -> int:
        """Candidates that pass the rule, including any drawn beyond the number wanted."""
        if self.candidate_passed is not None:
            return int(self.candidate_passed.sum())
        return int((self.candidate_scores >= self.threshold).sum())

    @property
    def acceptance_rate(self) -> float:
        return self.passed / self.tried if self.tried else float("nan")

    @property
    def shortfall(self) -> int:
        return self.wanted - self.accepted

    def summary(self) -> dict:
        return {
            "accepted": self.accepted,
            "wanted": self.wanted,
            "shortfall": self.shortfall,
            "tried": self.tried,
            "passed": self.passed,  # candidates that passed the rule, also any beyond `wanted`
            "acceptance_rate": round(self.acceptance_rate, 6),
            "filter": self.rule,
            "mean_score": round(float(self.scores.mean()), 6) if self.accepted else None,
            "mean_candidate_score": round(float(self.candidate_scores.nanmean()), 6) if self.tried else None,
        } | ({} if self.near_copies is None else {"near_copies_dropped": self.near_copies})


def _checked(images: torch.Tensor, scores: torch.Tensor, n: int, proposer: Proposer) -> tuple:
    """A proposer's answer, on the CPU, or a ValueError saying how it breaks the protocol."""
    name = type(proposer).__name__
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.ndim == 3):
        raise ValueError(
            f"{name}.propose must return uint8 images [n, H, W], got {getattr(images, 'shape', images)}"
        )
    if not isinstance(scores, torch.Tensor) or scores.shape != (n,) or len(images) != n:
        raise ValueError(
            f"{name}.propose({n}) returned {len(images)} images and scores {tuple(scores.shape)}"
        )
    scores = scores.detach().float().cpu()
    if ((scores < 0) | (scores > 1)).any():
        raise ValueError(
            f"{name}.propose returned scores outside [0, 1]: {scores.min():.3g}..{scores.max():.3g}"
        )
    return images.cpu(), scores


def _progress_bar(name: str, wanted: int):
    """Display only (kept apart so that `make mutation` counts the loop's numbers, not the bar's text)."""
    return progress(total=wanted, desc=f"synthesize {name}", unit="img", leave=False)


def draw_class(
    proposer: Proposer,
    class_index: int,
    wanted: int,
    rule: FilterRule | float,
    max_tries: int,
    batch_size: int,
    generator: torch.Generator,
    near_copy: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ClassDraw:
    """Draw batches of candidates until `wanted` pass `rule` (a bare number: threshold mode) or
    `max_tries` were drawn. A NaN score never passes a threshold. `near_copy` (uint8 images -> bool per
    image): passing candidates it flags are dropped; those met before the class was complete are counted."""
    rule = rule if isinstance(rule, FilterRule) else FilterRule("threshold", float(rule))
    images, scores, candidate_scores, candidate_passed, rejected, copies = [], [], [], [], [], []
    accepted = tried = kept_rejected = dropped = 0
    name = proposer.classes[class_index]
    bar = _progress_bar(name, wanted)
    while accepted < wanted and tried < max_tries:
        n = min(batch_size, max_tries - tried)
        if rule.mode == "none":  # every candidate is kept: draw no more than are wanted
            n = min(n, wanted - accepted)
        batch, batch_scores, top = rule.propose(proposer, class_index, n, generator)
        batch, batch_scores = _checked(batch, batch_scores, n, proposer)
        tried += n
        passed = rule.passes(batch_scores, top)
        candidate_passed.append(passed)
        take = passed.nonzero().squeeze(1)[: wanted - accepted]
        if near_copy is not None:
            take, batch_copies = _drop_copies(
                batch, passed.nonzero().squeeze(1), wanted - accepted, near_copy
            )
            dropped += len(batch_copies)
            copies.append(batch[batch_copies][: max(0, KEEP_REJECTED - sum(map(len, copies)))])
        images.append(batch[take])
        scores.append(batch_scores[take])
        candidate_scores.append(batch_scores)
        accepted += len(take)
        if kept_rejected < KEEP_REJECTED:
            rejected.append(batch[~passed][: KEEP_REJECTED - kept_rejected])
            kept_rejected += len(rejected[-1])
        bar.update(len(take))
    bar.close()
    empty_images = torch.zeros((0, 0, 0), dtype=torch.uint8)
    return ClassDraw(
        name=name,
        label=class_index,
        wanted=wanted,
        images=torch.cat(images) if images else empty_images,
        scores=torch.cat(scores) if scores else torch.zeros(0),
        candidate_scores=torch.cat(candidate_scores) if candidate_scores else torch.zeros(0),
        rejected=torch.cat(rejected) if rejected else empty_images,
        threshold=rule.threshold if rule.mode == "threshold" else float("nan"),
        candidate_passed=torch.cat(candidate_passed)
        if candidate_passed
        else torch.zeros(0, dtype=torch.bool),
        rule=rule.describe(),
        near_copies=dropped if near_copy is not None else None,
        copies=(torch.cat(copies) if copies else empty_images) if near_copy is not None else None,
    )


def _drop_copies(
    batch: torch.Tensor, passing: torch.Tensor, need: int, near_copy: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Of the passing candidates (indices, draw order): the first `need` (>= 1) that are not near-copies,
    and the near-copies met up to the last of those (all of them when the batch does not complete the
    class)."""
    is_copy = near_copy(batch[passing]) if len(passing) else torch.zeros(0, dtype=torch.bool)
    originals = (~is_copy).cumsum(0)
    reached = (originals >= need).nonzero()
    considered = int(reached[0]) + 1 if len(reached) else len(passing)
    kept = passing[:considered][~is_copy[:considered]]
    return kept, passing[:considered][is_copy[:considered]]


def synthesize(
    proposer: Proposer,
    wanted: int,
    rule: FilterRule | float,
    max_tries_factor: float,
    batch_size: int,
    generator: torch.Generator,
    near_copy: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> list[ClassDraw]:
    """Filtered draws for every class of the proposer. Deterministic given the generator's state (and the
    batch size, which sets how candidates are grouped): each class gets its own stream seeded from it."""
    class_seeds = torch.randint(0, 2**62, (len(proposer.classes),), generator=generator).tolist()
    max_tries = math.ceil(max_tries_factor * wanted)
    return [
        draw_class(
            proposer,
            c,
            wanted,
            rule,
            max_tries,
            batch_size,
            torch.Generator().manual_seed(seed),
            near_copy,
        )
        for c, seed in enumerate(class_seeds)
    ]


@dataclass
class SynthesizeResult:
    draws: list[ClassDraw]
    seconds: float
    out_dir: Path
    run_id: str | None = None

    @property
    def accepted(self) -> int:
        return sum(d.accepted for d in self.draws)

    @property
    def tried(self) -> int:
        return sum(d.tried for d in self.draws)

    @property
    def candidates_per_second(self) -> float:
        return self.tried / self.seconds if self.seconds else float("nan")


def near_copy_filter(params: SynthesizeParams, prepared: Path | None, device: torch.device):
    """The near-copy test against data/prepared/train.npz (metrics/memorisation.NearCopyFilter)."""

    if prepared is None:
        raise CxraugError(
            "synthesize.filter.drop_near_copies needs the prepared split (--prepared data/prepared)"
        )
    train = load_split(prepared, "train")
    if len(train) < 2:
        raise CxraugError(f"{prepared}/train.npz: the near-copy filter needs at least two training images")
    return NearCopyFilter(
        train.images, params.filter.copy_threshold, device, patient_codes(train.patient_ids)
    )
