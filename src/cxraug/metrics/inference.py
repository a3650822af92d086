"""Two-level inference for per-class AUC: intervals and paired comparisons that resample training runs AND
test patients, p-values that agree with the intervals by construction, and multiplicity adjustment.

Estimand. For a variant (a training recipe: real data, augmentation, generator, classifier, schedule) and a
class k,

    theta_k = E_T[ AUC_k(f_T; P) ],

the one-vs-rest AUC that a classifier trained by this recipe reaches on the test population P (the patients
the test split was drawn from), averaged over the training randomness T: the classifier seed and, where
generators are replicated, the generator's seed and its synthetic draw. The macro estimand is the unweighted
mean of theta_k over classes; a comparison estimates theta_k(a) - theta_k(b) for two variants scored on the
same test images. Everything is conditional on the one training split and the recipe's fixed settings.

Point estimate: the mean over runs of each run's AUC on the whole test split (nested replicates: every
generator seed x classifier seed run weighted equally); macro: the mean of that over classes. It is NOT the
AUC of the run-averaged scores (an ensemble), which estimates a different, larger quantity.

What the intervals cover. Test patients: whole patients are resampled (a cluster bootstrap), for both variants
of a comparison with the SAME draw, so the shared case mix cancels. Training runs: the finite number of runs
and their spread; replicates nested in generator seeds are clustered by generator seed, and runs that two
variants share (`paired_runs`) enter the difference once, so their effect cancels. Not covered: other training
splits, other hyperparameters, other patient populations (other hospitals, scanners). A variant with a single
run (or a single generator seed) has no estimable run-level variance: it then contributes the patient level
only (its `se_runs` is 0 and `n_units` says why).

Run level, `run_level="t"` (default). With 3 runs, resampling runs underestimates their variance by (R-1)/R
and uses normal-like quantiles where the estimated run variance has only R-1 degrees of freedom: the plain
two-level bootstrap rejected a true null in 14% of simulated studies at nominal 5%
(tests/metrics/test_inference.py). So each draw is

    estimate + (patient-bootstrap deviation + run-level deviation) * sqrt(nu / chi2_nu),

where the patient-bootstrap deviation is that of the run-averaged AUC (difference) under a patient resample;
the run-level deviation is a Gaussian multiplier draw over the training units with the cluster-robust
variance G/(G-1) sum_g u_g^2 (u_g: unit g's share of the run mean's deviation; G units; equal to
s^2/R with n-1 for unclustered runs); and nu is the Welch-Satterthwaite degrees of freedom of the summed
variance (patient level: infinite; run level: G-1 per independently trained variant). With a normal patient
level the percentile interval of these draws is the Welch-Satterthwaite t interval
estimate +- t_nu sqrt(V_patients + V_runs); it keeps the patient bootstrap's shape otherwise and reduces to it
exactly when there is no run variance. The run x patient interaction enters both variances, which makes the
interval slightly conservative (as for any bootstrap of a crossed design). `run_level="resample"` is the plain
two-level bootstrap (units, then runs within units, with replacement), kept for comparison.

Intervals are equal-tailed percentile intervals of the draws, with the order-statistic rule of
`percentile_interval`; `percentile_p_value` is the smallest alpha at which that interval excludes 0, so
"p < alpha" and "the (1 - alpha) interval excludes 0" are the same statement, ties and zeros included
(both, and `adjust` for a table's p-values, live in metrics/significance.py and are re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from cxraug.core.errors import CxraugError
from cxraug.metrics.auc import patient_weights, weighted_auc
from cxraug.metrics.significance import adjust, alpha_of, percentile_interval, percentile_p_value

__all__ = [
    "AucComparison",
    "AucInterval",
    "adjust",
    "percentile_interval",
    "percentile_p_value",
    "two_level_comparison",
    "two_level_interval",
]

RunLevel = Literal["t", "resample"]
_BATCH = 250  # patient resamples scored at once (memory: batch x images weights)


@dataclass(frozen=True)
class _Arm:
    """One variant's runs: scores [R, N, K], unit index of each run [R] (0..G-1 within its stratum), the
    stratum (independent draw of units) it belongs to, and its sign in the estimated quantity."""

    scores: np.ndarray
    units: np.ndarray
    stratum: int
    sign: float


def _runs(scores, run_groups) -> tuple[np.ndarray, np.ndarray]:
    """[N, K], [R, N, K] or nested [G, C, N, K] scores -> ([R, N, K], group label of each run)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 4:
        if run_groups is not None:
            raise ValueError("nested [G, C, N, K] scores say the groups; run_groups goes with [R, N, K]")
        return scores.reshape(-1, *scores.shape[2:]), np.repeat(np.arange(scores.shape[0]), scores.shape[1])
    if scores.ndim == 2:
        scores = scores[None]
    if scores.ndim != 3:
        raise ValueError(f"scores must be [N, K], [R, N, K] or [G, C, N, K], got shape {scores.shape}")
    groups = np.arange(len(scores)) if run_groups is None else np.asarray(run_groups)
    if groups.shape != (len(scores),):
        raise ValueError(f"{groups.size} run group labels for {len(scores)} runs")
    return scores, groups


def _check(arms: list[_Arm], labels: np.ndarray, patient_ids: np.ndarray) -> None:
    n_images, n_classes = arms[0].scores.shape[1:]
    if any(a.scores.shape[1:] != (n_images, n_classes) for a in arms):
        raise ValueError("the variants' scores differ in images or classes")
    if len(labels) != n_images or len(patient_ids) != n_images:
        raise ValueError(f"{n_images} scored images but {len(labels)} labels and {len(patient_ids)} patients")
    counts = np.bincount(labels, minlength=n_classes)
    undefined = np.flatnonzero((counts == 0) | (counts == n_images))
    if undefined.size:
        raise CxraugError(f"AUC undefined for class index(es) {undefined.tolist()}: no positive or negative")


def _auc_columns(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """scores [R, N, K], weights [B, N] -> [B, R, K + 1]: each run's per-class AUC under each weighting, the
    macro AUC (class mean) in the last column."""
    n_runs, _, n_classes = scores.shape
    out = np.empty((len(weights), n_runs, n_classes + 1))
    for r in range(n_runs):
        for k in range(n_classes):
            out[:, r, k] = weighted_auc(scores[r, :, k], labels == k, weights)
    out[..., -1] = out[..., :-1].mean(-1)
    return out


def _patient_tables(arms, labels, patient_ids, n_boot, rng) -> list[np.ndarray]:
    """Per arm [B, R, K + 1]: run AUCs on n_boot patient resamples, the SAME resamples for every arm."""
    tables: list[list[np.ndarray]] = [[] for _ in arms]
    for start in range(0, n_boot, _BATCH):
        weights = patient_weights(patient_ids, min(_BATCH, n_boot - start), rng)
        for table, arm in zip(tables, arms, strict=True):
            table.append(_auc_columns(arm.scores, labels, weights))
    return [np.concatenate(t) for t in tables]


def _unit_shares(arms: list[_Arm], run_aucs: list[np.ndarray]) -> dict[int, np.ndarray]:
    """Per stratum [G, K + 1]: u_g, unit g's signed share of the run mean's deviation from its mean."""
    shares: dict[int, np.ndarray] = {}
    for arm, aucs in zip(arms, run_aucs, strict=True):
        u = shares.setdefault(arm.stratum, np.zeros((arm.units.max() + 1, aucs.shape[1])))
        np.add.at(u, arm.units, arm.sign * (aucs - aucs.mean(0)) / len(aucs))
    return shares


def _run_variances(shares: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Cluster-robust run-level variance per stratum [S, K + 1] (G/(G-1) sum u_g^2; 0 with one unit) and
    its degrees of freedom [S] (G - 1)."""
    var, df = [], []
    for u in shares.values():
        g = len(u)
        var.append(g / (g - 1) * (u**2).sum(0) if g > 1 else np.zeros(u.shape[1]))
        df.append(max(g - 1, 1))
    return np.array(var), np.array(df, dtype=np.float64)


def _satterthwaite_df(patient_var: np.ndarray, run_var: np.ndarray, run_df: np.ndarray) -> np.ndarray:
    """Welch-Satterthwaite df of V_patients + sum_s V_s (patient level: infinite df); inf with no run var."""
    spread = (run_var**2 / run_df[:, None]).sum(0)
    total = patient_var + run_var.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(spread > 0, total**2 / spread, np.inf)


def _studentised_draws(estimate, patient_dev, shares, df, rng) -> np.ndarray:
    """estimate + (patient deviation + Gaussian multiplier run deviation) * sqrt(df / chi2_df), [B, K + 1]."""
    n = len(patient_dev)
    run_dev = np.zeros_like(patient_dev)
    for u in shares.values():
        if len(u) > 1:
            run_dev += np.sqrt(len(u) / (len(u) - 1)) * rng.standard_normal((n, len(u))) @ u
    finite = np.isfinite(df)
    scale = np.ones_like(patient_dev)
    chi2 = rng.chisquare(np.where(finite, df, 1.0), size=patient_dev.shape)
    scale[:, finite] = np.sqrt(df[finite] / chi2[:, finite])
    return estimate + (patient_dev + run_dev) * scale


def _resampled_run_draws(arms: list[_Arm], tables: list[np.ndarray], rng) -> np.ndarray:
    """Plain two-level bootstrap, [B, K + 1]: per stratum, units with replacement (once, shared by the arms
    in it), then per arm and drawn unit as many runs as it has, with replacement, from that unit's runs."""
    n = len(tables[0])
    n_units = {a.stratum: a.units.max() + 1 for a in arms}
    unit_counts = {s: rng.multinomial(g, np.full(g, 1.0 / g), size=n) for s, g in n_units.items()}
    total = np.zeros((n, tables[0].shape[2]))
    for arm, table in zip(arms, tables, strict=True):
        run_counts = np.zeros((n, len(arm.units)))
        for g in range(n_units[arm.stratum]):
            members = np.flatnonzero(arm.units == g)
            drawn = unit_counts[arm.stratum][:, g] * len(members)
            run_counts[:, members] = rng.multinomial(drawn, np.full(len(members), 1.0 / len(members)))
        run_counts /= run_counts.sum(1, keepdims=True)
        total += arm.sign * np.einsum("br,brc->bc", run_counts, table)
    return total


@dataclass(frozen=True)
class _Columns:
    """Per column (K classes, then macro): estimate, interval, p-value and what went into them."""

    estimate: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p_value: np.ndarray
    se_patients: np.ndarray
    se_runs: np.ndarray
    df: np.ndarray
    run_aucs: list[np.ndarray]  # per arm [R, K + 1]: each run's AUCs on the whole test split
    n_boot: int
    undefined_resamples: int


def _two_level(arms, labels, patient_ids, n_boot, level, run_level, seed, bounds) -> _Columns:
    """The shared engine: draws of sum_arm sign * (run-mean AUC), their interval and p-value per column."""
    if run_level not in ("t", "resample"):
        raise ValueError(f"run_level must be 't' or 'resample', got {run_level!r}")
    labels = np.asarray(labels, dtype=np.int64)
    patient_ids = np.asarray(patient_ids)
    _check(arms, labels, patient_ids)
    rng = np.random.default_rng(seed)
    full = [_auc_columns(a.scores, labels, np.ones((1, len(labels))))[0] for a in arms]  # [R, K + 1]
    estimate = sum(a.sign * f.mean(0) for a, f in zip(arms, full, strict=True))
    tables = _patient_tables(arms, labels, patient_ids, n_boot, rng)
    defined = ~np.any([np.isnan(t).any((1, 2)) for t in tables], axis=0)
    if defined.sum() < 2:
        raise CxraugError(
            f"{defined.sum()} of {n_boot} patient resamples have positives and negatives of every class: "
            "too few patients with a finding for a patient bootstrap"
        )
    tables = [t[defined] for t in tables]
    patient_dev = sum(a.sign * t.mean(1) for a, t in zip(arms, tables, strict=True)) - estimate
    patient_var = patient_dev.var(0, ddof=1) if len(patient_dev) > 1 else np.zeros_like(estimate)
    shares = _unit_shares(arms, full)
    run_var, run_df = _run_variances(shares)
    df = _satterthwaite_df(patient_var, run_var, run_df)
    if run_level == "t":
        draws = _studentised_draws(estimate, patient_dev, shares, df, rng)
    else:
        draws = _resampled_run_draws(arms, tables, rng)
    lo, hi = percentile_interval(draws, alpha_of(level))
    lo, hi = np.clip(lo, *bounds), np.clip(hi, *bounds)  # AUC in [0, 1]: keeps coverage and the p-value
    return _Columns(
        estimate=estimate,
        lo=lo,
        hi=hi,
        p_value=percentile_p_value(draws),
        se_patients=np.sqrt(patient_var),
        se_runs=np.sqrt(run_var.sum(0)),
        df=df,
        run_aucs=full,
        n_boot=int(defined.sum()),
        undefined_resamples=int((~defined).sum()),
    )


@dataclass(frozen=True)
class AucInterval:
    """Per-class and macro AUC of one variant (mean over runs of each run's AUC) with a two-level interval.

    se_patients / se_runs: the patient-level and run-level standard errors that the interval combines; df:
    its Welch-Satterthwaite degrees of freedom (inf: no run-level variance); run_std: SD over runs."""

    estimate: np.ndarray  # [K]
    lo: np.ndarray
    hi: np.ndarray
    macro: float
    macro_lo: float
    macro_hi: float
    se_patients: np.ndarray  # [K + 1], macro last (also below)
    se_runs: np.ndarray
    df: np.ndarray
    run_std: np.ndarray  # [K + 1]; zeros with a single run
    n_runs: int
    n_units: int  # independent training units (generator seeds where nested, else runs)
    n_boot: int
    undefined_resamples: int  # patient resamples without a positive or negative of some class (left out)
    run_level: str


@dataclass(frozen=True)
class AucComparison:
    """AUC(a) - AUC(b) per class and macro, its two-level interval and the two-sided p-value of the same
    draws (p < 1 - level exactly when the interval excludes 0)."""

    difference: np.ndarray  # [K]
    lo: np.ndarray
    hi: np.ndarray
    p_value: np.ndarray
    macro_difference: float
    macro_lo: float
    macro_hi: float
    macro_p_value: float
    se_patients: np.ndarray  # [K + 1], macro last
    se_runs: np.ndarray
    df: np.ndarray
    n_units: tuple[int, int]  # independent training units of a and b (shared units counted in both)
    n_boot: int
    undefined_resamples: int
    run_level: str


def two_level_interval(
    scores: np.ndarray,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    run_groups: np.ndarray | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    run_level: RunLevel = "t",
    seed: int | np.random.Generator = 0,
) -> AucInterval:
    """Interval for one variant's per-class and macro AUC over test patients AND training runs.

    scores [R, N, K] (or nested [G, C, N, K]: G generator seeds x C classifier seeds); run_groups: the
    training unit of each of the R runs (e.g. its generator seed), default: every run its own unit."""
    runs, groups = _runs(scores, run_groups)
    units = np.unique(groups.astype(str), return_inverse=True)[1]
    c = _two_level([_Arm(runs, units, 0, 1.0)], labels, patient_ids, n_boot, level, run_level, seed, (0, 1))
    table = c.run_aucs[0]
    return AucInterval(
        estimate=c.estimate[:-1],
        lo=c.lo[:-1],
        hi=c.hi[:-1],
        macro=float(c.estimate[-1]),
        macro_lo=float(c.lo[-1]),
        macro_hi=float(c.hi[-1]),
        se_patients=c.se_patients,
        se_runs=c.se_runs,
        df=c.df,
        run_std=table.std(0, ddof=1) if len(table) > 1 else np.zeros(table.shape[1]),
        n_runs=len(runs),
        n_units=int(units.max() + 1),
        n_boot=c.n_boot,
        undefined_resamples=c.undefined_resamples,
        run_level=run_level,
    )


def _paired_arms(scores_a, scores_b, run_groups_a, run_groups_b, paired_runs: bool) -> list[_Arm]:
    runs_a, groups_a = _runs(scores_a, run_groups_a)
    runs_b, groups_b = _runs(scores_b, run_groups_b)
    labels_a, labels_b = groups_a.astype(str), groups_b.astype(str)
    if not paired_runs:
        units_a = np.unique(labels_a, return_inverse=True)[1]
        units_b = np.unique(labels_b, return_inverse=True)[1]
        return [_Arm(runs_a, units_a, 0, 1.0), _Arm(runs_b, units_b, 1, -1.0)]
    if set(labels_a) != set(labels_b):
        raise ValueError(
            "paired_runs: both variants must have runs of the same training units "
            f"(a: {sorted(set(labels_a))}, b: {sorted(set(labels_b))})"
        )
    names = np.unique(labels_a)
    return [
        _Arm(runs_a, np.searchsorted(names, labels_a), 0, 1.0),
        _Arm(runs_b, np.searchsorted(names, labels_b), 0, -1.0),
    ]


def two_level_comparison(
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    labels: np.ndarray,
    patient_ids: np.ndarray,
    *,
    run_groups_a: np.ndarray | None = None,
    run_groups_b: np.ndarray | None = None,
    paired_runs: bool = False,
    n_boot: int = 2000,
    level: float = 0.95,
    run_level: RunLevel = "t",
    seed: int | np.random.Generator = 0,
) -> AucComparison:
    """AUC(a) - AUC(b) on the same test images, per class and macro: each draw applies ONE patient resample
    to both variants; the variants' training units vary independently, except with paired_runs.

    paired_runs=False: a and b were trained independently (each its own units: runs, or run_groups_*).
    paired_runs=True: equal run-group labels in a and b name the SAME training unit (default labels: run i
    of a and run i of b, e.g. two classifiers on one generator seed); a shared unit is drawn once for both,
    so its effect cancels in the difference."""
    arms = _paired_arms(scores_a, scores_b, run_groups_a, run_groups_b, paired_runs)
    c = _two_level(arms, labels, patient_ids, n_boot, level, run_level, seed, (-1, 1))
    return AucComparison(
        difference=c.estimate[:-1],
        lo=c.lo[:-1],
        hi=c.hi[:-1],
        p_value=c.p_value[:-1],
        macro_difference=float(c.estimate[-1]),
        macro_lo=float(c.lo[-1]),
        macro_hi=float(c.hi[-1]),
        macro_p_value=float(c.p_value[-1]),
        se_patients=c.se_patients,
        se_runs=c.se_runs,
        df=c.df,
        n_units=(int(arms[0].units.max() + 1), int(arms[1].units.max() + 1)),
        n_boot=c.n_boot,
        undefined_resamples=c.undefined_resamples,
        run_level=run_level,
    )
