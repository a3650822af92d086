"""The MLflow UI as a user opens it (`make ui`), in a real browser: Debian's chromium driven by
playwright. A tiny pipeline (prepare, train_bagan, classify baseline) logs to its own store; `mlflow ui`
serves it on 127.0.0.1; the test opens the experiment and runs and checks what is on screen.
Screenshots are kept in test-artifacts/mlflow-ui/. Skipped where playwright or chromium is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from cxraug.core.config import ClassifyParams, Params, PrepareParams, TrainBaganParams
from cxraug.core.tracking import ui_url
from tests.helpers import REPO, project_env

SHOTS = REPO / "test-artifacts" / "mlflow-ui"
CLASSES = ("no_finding", "infiltration", "atelectasis", "effusion", "nodule")


def _chromium() -> str | None:
    return os.environ.get("CXRAUG_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(_chromium() is None, reason="no chromium (apt-get install chromium)"),
]
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory, demo_raw):
    """A tiny pipeline's runs in a fresh sqlite store: {name: (experiment_id, run_id)}."""
    import mlflow
    import torch

    from cxraug.data.prepare import prepare
    from cxraug.gans.bagan.train import train_bagan
    from cxraug.stages import classify

    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    before, os.environ["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI"), uri
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        prepared = root / "data" / "prepared"
        prepare(PrepareParams(image_size=32), demo_raw, prepared, root / "metrics" / "prepare.json")
        gan = TrainBaganParams(
            latent_dim=12,
            g_base=8,
            d_base=8,
            ae_epochs=1,
            epochs=2,
            batch_size=32,
            grid_per_class=4,
            log_every=1,
            checkpoint_every=1000,
            device="cpu",
            precision="fp32",
        )
        bagan = train_bagan(gan, prepared, root / "models", root / "bagan.json", root / "checkpoints")
        tiny = ClassifyParams(
            seeds=[0], epochs=2, batch_size=32, width=1 / 16, bootstrap=100, precision="fp32", device="cpu"
        )
        params = Params(classify=tiny)
        paths = classify.Paths().under(root)
        result = classify.run(params, replace(paths, prepared=prepared))
        client = mlflow.MlflowClient(uri)
        ids = {}
        for name, run_id in (("bagan", bagan.run_id), ("classify", result.run_id)):
            ids[name] = (client.get_run(run_id).info.experiment_id, run_id)
    finally:
        torch.set_num_threads(threads)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return uri, root, ids


@pytest.fixture(scope="module")
def ui(store):
    """`mlflow ui` on a free 127.0.0.1 port, as `make ui` starts it; its base URL."""
    uri, root, _ = store
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin),
        "ui",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        str(root / "mlruns"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        cmd,
        cwd=root,
        env=project_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180  # a busy 2-core machine
    while True:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                pytest.fail("mlflow ui did not start within 180 s")
            time.sleep(0.5)
    yield base
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def page(ui):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox"])
        tab = browser.new_page(viewport={"width": 1440, "height": 1000})
        yield tab
        browser.close()


def _open(page, url: str, shot: str):
    page.goto(url)
    page.wait_for_load_state("load")
    return lambda: page.screenshot(path=str(SHOTS / shot))


def test_the_experiment_opens_on_its_runs_table(ui, store, page):
    _, _, ids = store
    experiment_id, _ = ids["bagan"]
    shoot = _open(page, ui_url(ui, experiment_id), "experiment.png")
    try:
        page.get_by_text("train_bagan", exact=True).first.wait_for(state="visible", timeout=60_000)
        page.get_by_text("matching run").first.wait_for(state="visible", timeout=30_000)
    finally:
        shoot()
    assert not page.get_by_text("No data available").first.is_visible()


def test_without_the_model_training_view_the_runs_are_hidden(ui, store, page):
    """The planted bug: the plain experiment URL opens MLflow 3.17 on its GenAI traces page."""
    _, _, ids = store
    experiment_id, _ = ids["bagan"]
    shoot = _open(page, f"{ui}/#/experiments/{experiment_id}", "experiment-genai-view.png")
    try:
        page.get_by_text("No data available").first.wait_for(state="visible", timeout=60_000)
    finally:
        shoot()
    assert not page.get_by_text("train_bagan", exact=True).first.is_visible()


# The standard deviation of the red channel of every image card whose source contains the key, drawn
# as loaded (same origin, so the canvas is readable): a grey placeholder or an empty card gives none or 0.
CARD_CONTRAST = """(key) => [...document.images]
  .filter(i => i.src.includes(key) && i.complete && i.naturalWidth > 100
    && i.getBoundingClientRect().width > 100)
  .map(i => { const c = document.createElement('canvas');
    c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d');
    g.drawImage(i, 0, 0); const d = g.getImageData(0, 0, c.width, c.height).data;
    let s = 0, s2 = 0; const n = d.length / 4;
    for (let k = 0; k < d.length; k += 4) { s += d[k]; s2 += d[k] * d[k]; }
    return Math.sqrt(s2 / n - (s / n) ** 2); })"""


def test_a_training_run_shows_a_loss_chart_and_a_visible_sample_grid(ui, store, page):
    _, _, ids = store
    experiment_id, run_id = ids["bagan"]
    shoot = _open(page, ui_url(ui, experiment_id, run_id, "model-metrics"), "bagan-run.png")
    try:
        page.get_by_text("train_bagan (ae/loss)").first.wait_for(state="visible", timeout=60_000)
        page.get_by_text("samples/by_class", exact=True).first.scroll_into_view_if_needed(timeout=30_000)
        page.wait_for_function(
            f"() => ({CARD_CONTRAST})('samples~by_class~final').length > 0", timeout=30_000
        )
        page.wait_for_function(
            f"() => ({CARD_CONTRAST})('samples~by_class%2Bstep').length > 0", timeout=30_000
        )
    finally:
        shoot()
    final = page.evaluate(CARD_CONTRAST, "samples~by_class~final")
    slider = page.evaluate(CARD_CONTRAST, "samples~by_class%2Bstep")  # opens on step 0, which exists
    assert min(final + slider) > 10, (final, slider)


def test_a_classify_run_shows_every_class_auc(ui, store, page):
    _, _, ids = store
    experiment_id, run_id = ids["classify"]
    shoot = _open(page, ui_url(ui, experiment_id, run_id), "classify-run.png")
    try:
        page.get_by_text("test_auc_macro", exact=True).first.wait_for(state="visible", timeout=60_000)
        page.get_by_text("test_auc/nodule", exact=True).first.scroll_into_view_if_needed(timeout=30_000)
        body = page.locator("body").inner_text()
    finally:
        shoot()
    missing = [c for c in CLASSES if f"test_auc/{c}" not in body]
    assert not missing, f"per-class AUCs not on screen: {missing}"
