"""Fidelity with a scale: every figure against a HELD-OUT real reference (the val split, which no generator
trains on), beside the same figure between two real sets (train vs val: the real-vs-real floor), at equal
set sizes, per class and overall; and the sanity checks that come before any of it is read as a score.

- Equal sizes. FD, KID's spread, precision and recall all depend on how many images each side has. Every
  side of a comparison (generated, train, val) gets the same images per class: the reference's class mix
  scaled down until every side has enough (`matched_counts`). A side with more is subsampled, `draws`
  times; the figure is the mean over draws and `_sd` its spread. A side with exactly that many is used
  whole and in order, so when nothing is subsampled the figure is the direct one (and `_sd` 0). Draw d
  subsamples the reference with its own generator, so the floor and the generated figure of one draw
  share their val images.
- The floor is computed on real images only: train vs val features of one space.
- A space whose real features barely spread (`relative_spread` below a threshold: a collapsed net maps
  every image to about one point) makes every distance about 0: it is reported as degenerate, no score.
- Class separability: leave-one-out k-NN accuracy on a class-balanced subsample, one-sided binomial test
  against chance (1/K). Generated images that are not separable by class where the real ones are, in a
  space no generator saw, are class-blind.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import binomtest

from cxraug.core.config import INDEPENDENT_EXTRACTORS
from cxraug.metrics.fidelity import fidelity_scores, metric_key


def matched_counts(label_sets: list[torch.Tensor], classes: list[int]) -> dict[int, int]:
    """Images per class that EVERY set gets: the last set's (the reference's) counts of `classes`, scaled
    by the largest factor <= 1 every set can give (integer arithmetic: the tightest set and class gives all
    its images). Classes missing from any set, or scaled to 0, are left out."""
    counts = [torch.bincount(labels, minlength=max(classes) + 1).tolist() for labels in label_sets]
    reference = counts[-1]
    present = [c for c in classes if all(n[c] > 0 for n in counts)]
    if not present:
        return {}
    have, need = min(((n[c], reference[c]) for n in counts for c in present), key=lambda p: p[0] / p[1])
    scaled = {c: reference[c] if have >= need else reference[c] * have // need for c in present}
    return {c: m for c, m in scaled.items() if m > 0}


def draw(labels: torch.Tensor, counts: dict[int, int], rng: np.random.Generator) -> torch.Tensor:
    """Indices: counts[c] images of each class c, all of them in order when the set has exactly that many,
    else a sorted random subset."""
    picks = []
    for c, m in counts.items():
        members = torch.nonzero(labels == c).squeeze(1).numpy()
        if len(members) > m:
            members = np.sort(rng.choice(members, size=m, replace=False))
        picks.append(members)
    return torch.from_numpy(np.concatenate(picks)) if picks else torch.zeros(0, dtype=torch.int64)


def compare(
    candidate: torch.Tensor,
    candidate_labels: torch.Tensor,
    reference: torch.Tensor,
    reference_labels: torch.Tensor,
    counts: dict[int, int],
    *,
    draws: int,
    seed: int,
    **score_settings,
) -> tuple[dict[str, float], dict[str, float], list[str]]:
    """Mean and spread (std over draws) of fidelity_scores(candidate, reference) at `counts` images per
    class on both sides, and the skip reasons (of the first draw)."""
    subsampled = any(
        int((labels == c).sum()) > m
        for labels in (candidate_labels, reference_labels)
        for c, m in counts.items()
    )
    runs, skipped = [], []
    for d in range(draws if subsampled else 1):
        i = draw(candidate_labels, counts, np.random.default_rng([seed, d, 0]))
        j = draw(reference_labels, counts, np.random.default_rng([seed, d, 1]))
        scores, reasons = fidelity_scores(candidate[i], reference[j], seed=seed, **score_settings)
        runs.append(scores)
        skipped = skipped or reasons
    keys = [k for k in runs[0] if k != "kid_subset_size"]
    mean = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    sd = {k: float(np.std([r[k] for r in runs])) for k in keys if k != "kid_std"}
    return mean, sd, skipped


def significant(value: float, digits: int = 6) -> float:
    """`digits` significant digits: spaces differ in scale by orders of magnitude (a fixed number of
    decimals would print a small-scale space's figures as 0)."""
    return float(f"{value:.{digits}g}")


def relative_spread(features: torch.Tensor) -> float:
    """trace(covariance) / mean squared norm: the share of the features' energy that varies between images
    (0 when every image maps to one point; 0 too for all-zero features)."""
    x = features.double()
    energy = float((x * x).sum(1).mean()) if len(x) else 0.0
    if len(x) < 2 or energy == 0.0:
        return 0.0
    return float(x.var(0, unbiased=True).sum()) / energy


def separability(
    features: torch.Tensor, labels: torch.Tensor, *, k: int = 5, seed: int = 0, alpha: float = 0.01
) -> dict | None:
    """Leave-one-out k-NN accuracy on a class-balanced subsample (the smallest class's count from each
    class; features standardised per dimension), and the one-sided binomial p-value against chance 1/K.
    None when fewer than 2 classes or fewer than k + 1 images per class."""
    counts = torch.bincount(labels)
    present = [c for c in range(len(counts)) if counts[c] > 0]
    m = min((int(counts[c]) for c in present), default=0)
    if len(present) < 2 or m < k + 1:
        return None
    idx = draw(labels, {c: m for c in present}, np.random.default_rng([seed, 2]))
    x, y = features[idx].double(), labels[idx]
    x = (x - x.mean(0)) / x.std(0).clamp_min(1e-12)
    d2 = torch.cdist(x, x).fill_diagonal_(float("inf"))
    order = d2.argsort(1)[:, :k]
    votes = torch.zeros(len(y), int(counts.numel()), dtype=torch.float64)
    votes.scatter_add_(1, y[order], torch.ones(order.shape, dtype=torch.float64))
    votes.scatter_add_(
        1, y[order[:, :1]], torch.full((len(y), 1), 1e-3, dtype=torch.float64)
    )  # ties: nearest
    correct = int((votes.argmax(1) == y).sum())
    p = float(binomtest(correct, len(y), 1.0 / len(present), alternative="greater").pvalue)
    return {
        "n_per_class": m,
        "classes": len(present),
        "accuracy": round(correct / len(y), 6),
        "chance": round(1.0 / len(present), 6),
        "p_value": round(p, 6),
        "separable": p < alpha,
    }


def reference_table(
    features: dict[str, dict[str, torch.Tensor]],
    labels: dict[str, torch.Tensor],
    classes: tuple[str, ...],
    *,
    draws: int,
    degenerate_spread: float,
    seed: int,
    **score_settings,
) -> tuple[dict, list[str]]:
    """`features[space]` and `labels` hold "synthetic", "train" and "val". Returns
    {"spaces": {space: spread, degenerate, separability of synthetic and of real (train + val) images},
    "overall": entry,
    "per_class": {class: entry}} where an entry has the per-side counts and "generated_vs_real"
    (synthetic vs val) and "real_vs_real" (train vs val: the floor), each `<metric>_<space>` and
    `<metric>_<space>_sd`, degenerate spaces left out; and the skip reasons."""
    spaces, skipped = {}, []
    k = score_settings["pr_neighbourhood"]
    real_labels = torch.cat([labels["train"], labels["val"]])
    for space, f in features.items():
        real = torch.cat([f["train"], f["val"]])
        spread = relative_spread(real)
        spaces[space] = {
            "real_spread": round(spread, 9),
            "degenerate": spread < degenerate_spread,
            "separability": {
                "synthetic": separability(f["synthetic"], labels["synthetic"], k=k, seed=seed),
                "real": separability(real, real_labels, k=k, seed=seed),
            },
        }
    groups = {"overall": list(range(len(classes)))} | {name: [k] for k, name in enumerate(classes)}
    table: dict = {"overall": {}, "per_class": {}}
    for group, members in groups.items():
        counts = matched_counts([labels["synthetic"], labels["train"], labels["val"]], members)
        entry = {
            "n_per_side": sum(counts.values()),
            "n_per_class": {classes[c]: m for c, m in counts.items()},
            "generated_vs_real": {},
            "real_vs_real": {},
        }
        for space, f in features.items():
            if spaces[space]["degenerate"]:
                continue
            for side, candidate, name in (
                ("synthetic", "generated_vs_real", "generated"),
                ("train", "real_vs_real", "real"),
            ):
                mean, sd, reasons = compare(
                    f[side],
                    labels[side],
                    f["val"],
                    labels["val"],
                    counts,
                    draws=draws,
                    seed=seed,
                    **score_settings,
                )
                entry[candidate] |= {metric_key(m, space): significant(v) for m, v in mean.items()}
                entry[candidate] |= {f"{metric_key(m, space)}_sd": significant(v) for m, v in sd.items()}
                skipped += [f"{group} / {name} vs val / {space} / {r}" for r in reasons]
        if group == "overall":
            table["overall"] = entry
        else:
            table["per_class"][group] = entry
    return {"spaces": spaces, **table}, skipped


def class_blind(cas_summary: dict | None, spaces: dict, cas_chance: float) -> list[str]:
    """Why the generator's images are class-blind (empty: no sign of it): CAS at chance (macro AUC below
    `cas_chance`, or its CI reaching 0.5), or, in a space no generator saw, synthetic images not separable
    by class where the real images are."""
    reasons = []
    if cas_summary:
        auc, (lo, hi) = cas_summary["macro_auc"], cas_summary["macro_auc_ci"]
        if auc < cas_chance or lo <= 0.5:
            where = "below chance (its labels mislead)" if hi < 0.5 else "at chance"
            reasons.append(f"CAS macro AUC {auc:.3f} (CI {lo:.3f}–{hi:.3f}) is {where}")
    for space, entry in spaces.items():
        real, synthetic = entry["separability"]["real"], entry["separability"]["synthetic"]
        informative = (
            space in INDEPENDENT_EXTRACTORS and not entry["degenerate"] and real and real["separable"]
        )
        if informative and (synthetic is None or not synthetic["separable"]):
            shown = "too few" if synthetic is None else f"k-NN accuracy {synthetic['accuracy']:.2f}"
            reasons.append(
                f"its images are not separable by class in the {space} space ({shown}; chance "
                f"{real['chance']:.2f}) where real images are ({real['accuracy']:.2f})"
            )
    return reasons
