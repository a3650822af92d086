import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cxraug.core.errors import CxraugError
from cxraug.data.demo import NOTICE, _anatomy, make_demo_data, render


def _digest(root):
    h = hashlib.md5()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_nih_layout(tmp_path):
    make_demo_data(tmp_path / "a", n_images=120, size=64, seed=1)
    make_demo_data(tmp_path / "b", n_images=120, size=64, seed=1)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    table = pd.read_csv(tmp_path / "a" / "Data_Entry_2017.csv")
    assert len(table) == 120 and table.shape[1] == 11
    assert len(list((tmp_path / "a").glob("images_00*/images/*.png"))) == 120
    image = Image.open(next((tmp_path / "a").rglob("*.png")))
    assert image.info["Description"] == NOTICE and image.mode == "L"
    assert "SYNTHETIC" in (tmp_path / "a" / "README.txt").read_text()


def test_imbalanced_like_nih(tmp_path):
    counts = make_demo_data(tmp_path, n_images=2000, size=32, seed=0)
    assert counts["No Finding"] > 5 * counts["Infiltration"] > 5 * counts["Nodule"] > 0
    assert sum(counts.values()) == 2000


def test_findings_change_the_lungs_in_their_own_way():
    anatomy = _anatomy(np.random.default_rng(0))
    healthy = render([], anatomy, np.random.default_rng(1), 128).astype(float)
    for finding in ("Nodule", "Effusion", "Atelectasis", "Infiltration"):
        diseased = render([finding], anatomy, np.random.default_rng(1), 128).astype(float)
        difference = diseased - healthy
        assert difference.mean() > 0.1, finding  # opacities brighten the film ...
        assert np.percentile(difference, 99.5) > 25, finding  # ... strongly where the finding is


def test_refuses_to_overwrite(tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    with pytest.raises(CxraugError, match="--force"):
        make_demo_data(tmp_path, n_images=60)
    assert (tmp_path / "keep.txt").exists()
