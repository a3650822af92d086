"""p-values and intervals from bootstrap draws that agree by construction, and multiplicity adjustment.

The interval is an equal-tailed percentile interval read off order statistics, and the p-value is the
smallest alpha at which that interval excludes 0; both use the same expression (2 count / B), so "p < alpha"
and "the (1 - alpha) interval excludes 0" are one statement, for any number of draws, ties and zeros
included. (np.quantile's interpolation and a "+1" p-value can disagree at the boundary: 2,000 draws with
exactly 50 at or below 0 gave p = 0.051 while the 95% interval excluded 0.)
"""

from __future__ import annotations

import numpy as np

ADJUST_METHODS = ("holm", "fdr_bh")


def _tail_share(count, n_draws: int):
    """2 count / B: the one expression that both the interval's order statistic and the p-value use."""
    return 2 * count / n_draws


def alpha_of(level: float) -> float:
    """1 - level, rounded to 12 decimals: level 0.95 means alpha = 0.05 exactly (1 - 0.95 is 0.05 + 4e-17
    in floating point), the alpha a reader compares p with."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    return round(1.0 - level, 12)


def percentile_interval(draws: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Equal-tailed (1 - alpha) percentile interval of draws [B, ...] (no NaN) along axis 0: the j-th
    smallest and the j-th largest draw, j = #{i in 0..B : 2i/B < alpha} (= ceil(alpha B / 2))."""
    draws = np.sort(np.asarray(draws, dtype=np.float64), axis=0)
    n = len(draws)
    if n == 0 or not 0 < alpha < 1:
        raise ValueError(f"need draws and 0 < alpha < 1, got {n} draws and alpha {alpha}")
    j = int(np.count_nonzero(_tail_share(np.arange(n + 1), n) < alpha))
    return draws[j - 1], draws[n - j]


def percentile_p_value(draws: np.ndarray) -> np.ndarray:
    """Two-sided p for "the quantity is 0" from draws [B, ...]: the smallest alpha at which
    `percentile_interval(draws, alpha)` excludes 0, min(1, 2 min(#{<= 0}, #{>= 0}) / B). The interval
    excludes 0 exactly when p < alpha. Draws equal to 0 count on both sides (identical variants: p = 1);
    p = 0 means no draw on the far side of 0, i.e. p < 2/B."""
    draws = np.asarray(draws, dtype=np.float64)
    smaller_side = np.minimum((draws <= 0).sum(0), (draws >= 0).sum(0))
    return np.minimum(1.0, _tail_share(smaller_side, len(draws)))


def resolution(n_draws: int) -> float:
    """2 / B: the smallest non-zero p that B draws can give. p = 0 says only p < 2 / B."""
    return _tail_share(1, n_draws)


def adjust(p_values, method: str = "holm", floor: float = 0.0) -> np.ndarray:
    """Adjusted p-values for one family (every entry of p_values, any shape), same shape; NaN (an undefined
    AUC) passes through and is not counted in the family. p below `floor` (a bootstrap's `resolution`)
    enters at `floor`: a bootstrap p of 0 is a bound, and Holm must multiply the bound, not the 0.

    Holm is the default: a report table is a fixed family of pre-planned comparisons, and a reader takes each
    marked cell as a claim of its own; Holm keeps the chance of ANY false mark in the table at alpha, under
    any dependence between cells (they share test images and baseline runs), and is uniformly more powerful
    than Bonferroni. "fdr_bh" (Benjamini-Hochberg) bounds the expected share of false marks instead: more
    power for screening a large table; its guarantee needs positively dependent p-values (PRDS), plausible
    for comparisons that share a baseline but not proven for these."""
    if method not in ADJUST_METHODS:
        raise ValueError(f"method must be one of {ADJUST_METHODS}, got {method!r}")
    p = np.asarray(p_values, dtype=np.float64)
    defined = ~np.isnan(p)
    if np.any((p[defined] < 0) | (p[defined] > 1)):
        raise ValueError("p-values must lie in [0, 1] (or be NaN)")
    out = np.full(p.shape, np.nan)
    if defined.any():
        from statsmodels.stats.multitest import multipletests  # ~1 s to import: only where adjusting

        out[defined] = multipletests(np.maximum(p[defined], floor), method=method)[1]
    return out
