"""Stand-in for `cxraug.evaluate.auc.paired_bootstrap` (written on the classify branch) while that module
is absent from this checkout: the agreed signature and result fields, computed plainly (patient-weighted
Mann-Whitney, no ties). `install()` registers it, and `subprocess_env` does so in subprocesses, only when
the real module cannot be imported; after the merge both do nothing and the tests use the real one."""

from __future__ import annotations

import importlib.util
import sys
import types

import numpy as np


def _weighted_aucs(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Seed-mean one-vs-rest AUC per class for every weighting: scores [S, N, K], weights [B, N] -> [B, K].
    Mann-Whitney with image weights; ties are ignored (the planted test scores are continuous)."""
    out = np.zeros((len(weights), scores.shape[2]))
    for s in scores:
        for k in range(s.shape[1]):
            order = np.argsort(s[:, k])
            w, positive = weights[:, order], labels[order] == k
            negatives_below = np.cumsum(w * ~positive, axis=1)
            pairs = (w * positive * negatives_below).sum(1)
            out[:, k] += pairs / ((w * positive).sum(1) * (w * ~positive).sum(1))
    return out / len(scores)


def _p(boots: np.ndarray, observed) -> np.ndarray:
    return (np.sum(np.abs(boots - observed) >= np.abs(observed) - 1e-12, axis=0) + 1) / (len(boots) + 1)


def paired_bootstrap(scores_a, scores_b, labels, patient_ids, n_boot=2000, level=0.95, seed=0):
    scores_a, scores_b = (np.asarray(x, dtype=np.float64) for x in (scores_a, scores_b))
    scores_a, scores_b = (x if x.ndim == 3 else x[None] for x in (scores_a, scores_b))
    labels = np.asarray(labels)
    _, patient_of_image = np.unique(patient_ids, return_inverse=True)
    n_patients = patient_of_image.max() + 1
    rng = np.random.default_rng(seed)
    drawn = rng.multinomial(n_patients, np.full(n_patients, 1 / n_patients), size=n_boot)
    weights = np.vstack([np.ones(len(labels)), drawn[:, patient_of_image]])
    difference = _weighted_aucs(scores_a, labels, weights) - _weighted_aucs(scores_b, labels, weights)
    observed, boots = difference[0], difference[1:]
    alpha = (1 - level) / 2
    macro = boots.mean(1)
    return types.SimpleNamespace(
        difference=observed,
        lo=np.quantile(boots, alpha, axis=0),
        hi=np.quantile(boots, 1 - alpha, axis=0),
        p_value=_p(boots, observed),
        macro_difference=float(observed.mean()),
        macro_lo=float(np.quantile(macro, alpha)),
        macro_hi=float(np.quantile(macro, 1 - alpha)),
        macro_p_value=float(_p(macro, observed.mean())),
        n_boot=n_boot,
    )


def needed() -> bool:
    installed = sys.modules.get("cxraug.evaluate.auc")
    if installed is not None:
        return getattr(installed, "IS_TEST_DOUBLE", False)
    return importlib.util.find_spec("cxraug.evaluate.auc") is None


def install() -> bool:
    """Register the stand-in if the real module is absent; True if it did."""
    if not needed():
        return False
    module = types.ModuleType("cxraug.evaluate.auc")
    module.paired_bootstrap = paired_bootstrap
    module.IS_TEST_DOUBLE = True
    sys.modules["cxraug.evaluate.auc"] = module
    return True


SITECUSTOMIZE = """
import sys
sys.path.insert(0, {repo!r})
from tests.auc_double import install
install()
"""


def subprocess_env(env: dict, tmp_dir, repo) -> dict:
    """`env` for a subprocess that imports the stand-in at start-up (through sitecustomize) if needed."""
    if not needed():
        return env
    (tmp_dir / "sitecustomize.py").write_text(SITECUSTOMIZE.format(repo=str(repo)))
    return env | {"PYTHONPATH": f"{tmp_dir}:{env.get('PYTHONPATH', '')}"}
