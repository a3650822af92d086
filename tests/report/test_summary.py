"""`dvc metrics show` is a readable summary: a few shared columns per stage, the details elsewhere."""

import json

import pytest

from cxraug.core.runtime import atomic_write_json
from cxraug.report.summary import summarize, summary_rows
from tests.helpers import dvc, make_project

CLASSIFY = {
    "macro_auc": 0.86802,
    "macro_auc_std": 0.05,
    "macro_auc_ci": [0.83816, 0.90704],
    "per_class_auc": {},
}
DETAILS = {
    "prepare.json": {"images": 1824, "patients": 862, "per_class": {"Nodule": 40}, "counts": {}},
    # the generators' stages write one file per replicate (replicates.generator_seeds)
    "train_bagan/seed0.json": {"ae_steps": 95, "gan_steps": 76, "seconds": 41.23, "val_d_acc_real": 0.75},
    "train_bagan/seed1.json": {"ae_steps": 95, "gan_steps": 70, "seconds": 40.0, "val_d_acc_real": 0.7},
    "train_embedder/seed0.json": {"steps": 45, "seconds": 10.43, "val_knn_accuracy": 0.87},
    "train_opengan/seed0.json": {"steps": 120, "seconds": 30.61, "last_epoch": {"d_loss": 1.0}},
    **{
        f"synthesize/{g}/seed0.json": {"accepted": 1500, "acceptance_rate": 0.5859, "per_class": {}}
        for g in ("bagan", "opengan")
    },
    **{
        f"classify/{v}.json": CLASSIFY
        for v in ("baseline", "weighted_loss", "oversample", "standard_aug_100", "bagan_100", "opengan_100")
    },
    **{
        f"gan/{g}/seed0.json": {
            "cas": CLASSIFY,
            "fidelity": {"overall": {"fd_embedder": 0.2072581}},
            "memorisation": {"pixel": {"copies": 3}},
        }
        for g in ("bagan", "opengan")
    },
}


def _write(root):
    for name, detail in DETAILS.items():
        atomic_write_json(root / "metrics" / name, detail)
    atomic_write_json(root / "metrics" / "compare.json", {"variants": {"x": {"p_value": 0.2}}})


def test_rows_hold_the_detail_files_numbers(tmp_path):
    _write(tmp_path)
    rows = summary_rows(tmp_path / "metrics")
    assert set(rows) == set(DETAILS)  # compare.json is a detail of the report, not a stage row
    assert rows["classify/baseline.json"] == {"macro_auc": 0.868, "ci_low": 0.8382, "ci_high": 0.907}
    assert rows["train_bagan/seed0.json"] == {"steps": 171, "seconds": 41.2}
    assert rows["train_bagan/seed1.json"] == {"steps": 165, "seconds": 40.0}
    assert rows["gan/bagan/seed0.json"] == {
        "macro_auc": 0.868,
        "ci_low": 0.8382,
        "ci_high": 0.907,
        "fd": 0.2073,
        "copies": 3,
    }
    assert rows["synthesize/opengan/seed0.json"] == {"images": 1500, "acceptance": 0.586}
    columns = {k for r in rows.values() for k in r}
    assert len(columns) <= 10, columns


def test_an_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="no summary"):
        summarize("bogus", {})


def test_dvc_metrics_show_is_a_screen_wide(tmp_path):
    project = make_project(tmp_path / "project")
    _write(project)
    run = dvc(project, "repro", "--single-item", "summary")
    assert run.returncode == 0, run.stderr + run.stdout
    shown = dvc(project, "metrics", "show")
    lines = shown.stdout.splitlines()
    assert len(lines) == 1 + len(DETAILS), shown.stdout
    width = max(map(len, lines))
    assert width <= 160, f"{width} characters:\n{shown.stdout}"
    assert "0.868" in shown.stdout and "metrics/summary/classify/baseline.json" in shown.stdout
    detail = json.loads(dvc(project, "metrics", "show", "--json", "metrics/prepare.json").stdout)
    assert "per_class" in json.dumps(detail)  # the details stay one command away


def test_dvc_plots_show_renders_with_no_network(tmp_path):
    """The plots are the report's PNGs: DVC's page embeds them and loads no JavaScript from a CDN."""
    import numpy as np
    from PIL import Image

    project = make_project(tmp_path / "project")
    (project / "reports" / "figures").mkdir(parents=True)
    Image.fromarray(np.full((20, 30), 128, np.uint8)).save(project / "reports" / "figures" / "roc_n100.png")
    shown = dvc(project, "plots", "show", "-o", str(tmp_path / "html"))
    assert shown.returncode == 0, shown.stderr
    page = (tmp_path / "html" / "index.html").read_text()
    assert "roc_n100.png" in page
    assert "<script" not in page and "http://" not in page and "https://" not in page
