"""Shared fixtures: MLflow in a temporary sqlite store, the real NIH subset when present, tiny data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["CXRAUG_NO_PROGRESS"] = "1"
# OpenMP threads that spin while waiting make torch 10-30x slower when other processes share the cores
# (measured: a 2-thread VGG step 0.96 s spinning vs 0.08 s passive); must be set before torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# resume tests compare weights to 1e-6: on a GPU that needs deterministic kernels (runtime.seed_everything)
os.environ.setdefault("CXRAUG_DETERMINISTIC", "1")
# precision: auto's remembered CPU layout: one per test session (shared by its subprocesses), not the user's
os.environ.setdefault("CXRAUG_CACHE_DIR", tempfile.mkdtemp(prefix="cxraug-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
NIH_SUBSET = SHARED_DATA / "nih-cxr14-subset"
NIH_METADATA = SHARED_DATA / "nih-cxr14-metadata"


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One sqlite store per test session (creating the schema costs seconds)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture
def nih_subset() -> Path:
    if not NIH_SUBSET.is_dir():
        pytest.skip("../shared/data/nih-cxr14-subset is absent")
    return NIH_SUBSET


@pytest.fixture
def nih_metadata() -> Path:
    if not NIH_METADATA.is_dir():
        pytest.skip("../shared/data/nih-cxr14-metadata is absent")
    return NIH_METADATA


@pytest.fixture(scope="session")
def demo_raw(tmp_path_factory) -> Path:
    """A small deterministic phantom data set in the NIH layout (read-only for tests)."""
    from cxraug.data.demo import make_demo_data

    root = tmp_path_factory.mktemp("demo") / "raw"
    make_demo_data(root, n_images=600, size=96, seed=3)
    return root
