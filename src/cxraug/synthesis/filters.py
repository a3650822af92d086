"""Which candidates synthesis keeps: one rule per generator (`synthesize.filter.per_gan.<gan>`).

  argmax     the generator's own classifier puts the intended class on top: for BAGAN, D's largest output
             of its K+1 (K classes + "generated") is the intended class. This is the paper's rule, and it
             needs no threshold, so it does not depend on how D's scores are calibrated.
  threshold  the candidate's score (the model's probability of the intended class) is >= `threshold`.
  none       every candidate is kept (the paper did not filter NewGAN).

A generator without an entry uses `threshold` with `synthesize.filter.threshold`. `argmax` needs a
proposer that ranks the classes (`propose_ranked`); asking it of one that cannot is a one-line error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cxraug.core.config import SynthesisFilterParams
from cxraug.core.errors import CxraugError
from cxraug.gans.registry import Proposer

MODES = ("argmax", "threshold", "none")


@dataclass(frozen=True)
class FilterRule:
    mode: str = "threshold"
    threshold: float = 0.5  # used by mode "threshold" only

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise CxraugError(f"filter mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def propose(
        self, proposer: Proposer, class_index: int, n: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """n candidates, their scores and (argmax only) whether the intended class is the model's top."""
        if self.mode != "argmax":
            return (*proposer.propose(class_index, n, generator), None)
        ranked = getattr(proposer, "propose_ranked", None)
        if ranked is None:
            raise CxraugError(
                f"filter mode argmax needs a generator that ranks classes; {type(proposer).__name__} does "
                "not (use threshold or none)"
            )
        return ranked(class_index, n, generator)

    def passes(self, scores: torch.Tensor, top: torch.Tensor | None) -> torch.Tensor:
        """bool per candidate; a NaN score never passes a threshold."""
        if self.mode == "none":
            return torch.ones(len(scores), dtype=torch.bool)
        if self.mode == "argmax":
            return top.bool().cpu()
        return scores >= self.threshold

    def describe(self) -> str:
        return f"threshold {self.threshold:g}" if self.mode == "threshold" else self.mode


def filter_rule(params: SynthesisFilterParams, gan: str) -> FilterRule:
    """The rule synthesize.filter sets for `gan`."""
    entry = params.per_gan.get(gan)
    if entry is None:
        return FilterRule("threshold", params.threshold)
    threshold = params.threshold if entry.threshold is None else entry.threshold
    return FilterRule(entry.mode, threshold)
