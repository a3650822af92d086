"""train_diffusion under torchrun: two processes, killed and resumed, train like one process."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from cxraug.core.runtime import safe_load
from tests import ddp_driver
from tests.core.test_distributed import REPO, _job, history, prepared, relative_gap, torchrun  # noqa: F401

DIFFUSION = {
    **{"resolution": 16, "widths": [8, 16], "layers_per_block": 1, "attention": False},
    **{"train_timesteps": 100, "epochs": 2, "steps_per_epoch": 4, "batch_size": 16, "warmup_steps": 2},
    **{"sampler_steps": 2, "grid_per_class": 1, "log_every": 1, "checkpoint_every": 3},
    **{"device": "cpu", "precision": "fp32"},
}


@pytest.mark.slow  # torchrun start-up twice and three short trainings
def test_two_processes_resume_and_train_diffusion_like_one_process(prepared, tmp_path):  # noqa: F811
    ddp_driver.main(str(_job(tmp_path / "one", "train_diffusion", DIFFUSION, prepared)))
    one = json.loads((tmp_path / "one/metrics.json").read_text())

    killed = torchrun(
        str(REPO / "tests/ddp_driver.py"),
        str(_job(tmp_path / "two", "train_diffusion", DIFFUSION, prepared, kill_at=5)),
    )
    assert killed.returncode != 0 and "killed after step 5" in killed.stderr, killed.stderr[-2000:]
    saved = safe_load(tmp_path / "two/checkpoints/state.pt")
    assert saved["step"] == 3
    job = _job(tmp_path / "two", "train_diffusion", DIFFUSION, prepared)
    resumed = torchrun(str(REPO / "tests/ddp_driver.py"), str(job))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    two = json.loads((tmp_path / "two/metrics.json").read_text())
    assert two["mlflow_run_id"] == saved["run_id"] and two["processes"] == 2
    assert mlflow.MlflowClient().get_run(two["mlflow_run_id"]).info.status == "FINISHED"
    ours, theirs = history(two["mlflow_run_id"], "loss"), history(one["mlflow_run_id"], "loss")
    assert sorted(ours) == sorted(theirs) == list(range(1, 9))
    np.testing.assert_allclose([ours[s] for s in theirs], list(theirs.values()), rtol=1e-3, atol=1e-5)
    weights = [safe_load(tmp_path / f"{n}/model/unet.pt") for n in ("one", "two")]
    assert relative_gap(weights[1], weights[0]) < 2e-2
