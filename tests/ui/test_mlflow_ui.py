"""The MLflow UI as a user opens it (`make ui`), in a real browser: Debian's chromium driven by
playwright. A tiny pipeline (prepare, train_bagan, classify baseline) logs to its own store; `mlflow ui`
serves it on 127.0.0.1 with cxraug's app (`make ui`); the tests open the experiment and runs as a new
browser would and check what is on screen, and a plain `mlflow ui` shows what the app changes.
Screenshots are kept in test-artifacts/mlflow-ui/. Skipped where playwright or chromium is missing."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from cxraug.core.config import ClassifyParams, Params, PrepareParams, TrainBaganParams
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
        ids["bagan_name"] = client.get_experiment(ids["bagan"][0]).name
    finally:
        torch.set_num_threads(threads)
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
    return uri, root, ids


def _mlflow_app_entry_point(root: Path) -> Path:
    """A folder that, on PYTHONPATH, registers pyproject.toml's `mlflow.app` entry points, as an
    installed cxraug does (`make setup`), whatever the shared test venv was installed from."""
    entry_points = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][
        "mlflow.app"
    ]
    info = root / "entry-points" / "cxraug_mlflow_app-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cxraug-mlflow-app\nVersion: 0\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("[mlflow.app]\n" + "\n".join(lines) + "\n")
    return info.parent


def _serve(uri: str, root: Path, app_name: str | None):
    """`mlflow ui` on a free 127.0.0.1 port (with `--app-name`, as `make ui` starts it); its base URL."""
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_bin), "ui", "--backend-store-uri", uri, "--default-artifact-root", str(root / "mlruns")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = project_env()
    if app_name:
        cmd += ["--app-name", app_name]
        env["PYTHONPATH"] = os.pathsep.join([str(_mlflow_app_entry_point(root)), env.get("PYTHONPATH", "")])
    server = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
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
                pytest.fail(f"mlflow ui (app {app_name}) did not start within 180 s")
            time.sleep(0.5)
    return base, server


def _stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()


@pytest.fixture(scope="module")
def ui(store):
    """`make ui`'s server: MLflow's with cxraug's app (cxraug.cli.ui)."""
    uri, root, _ = store
    base, server = _serve(uri, root, "cxraug")
    yield base
    _stop(server)


@pytest.fixture(scope="module")
def plain_ui(store):
    """A plain `mlflow ui`, without cxraug's app: the control that shows what the fix changes."""
    uri, root, _ = store
    base, server = _serve(uri, root, None)
    yield base
    _stop(server)


@pytest.fixture(scope="module")
def browser():
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=_chromium(), headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser profile per test (empty localStorage, as a new user's)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    yield context.new_page()
    context.close()


def _open(page, url: str, shot: str):
    page.goto(url)
    page.wait_for_load_state("load")
    return lambda: page.screenshot(path=str(SHOTS / shot))


def _shows_runs(page) -> None:
    page.get_by_text("train_bagan", exact=True).first.wait_for(state="visible", timeout=60_000)
    page.get_by_text("matching run").first.wait_for(state="visible", timeout=30_000)
    assert not page.get_by_text("No data available").first.is_visible()


def test_the_plain_experiment_url_opens_on_its_runs_table(ui, store, page):
    _, _, ids = store
    experiment_id, _ = ids["bagan"]
    shoot = _open(page, f"{ui}/#/experiments/{experiment_id}", "experiment.png")
    try:
        _shows_runs(page)
    finally:
        shoot()


def test_the_experiment_list_leads_to_the_runs_table(ui, store, page):
    _, _, ids = store
    name = ids["bagan_name"]
    shoot = _open(page, f"{ui}/#/experiments", "experiment-list.png")
    try:
        page.get_by_role("link", name=name, exact=True).first.click(timeout=60_000)
        _shows_runs(page)
    finally:
        shoot()


def test_a_view_the_user_chose_in_the_ui_stands(ui, store, page):
    """The default applies only to a browser with no choice stored: one that chose GenAI keeps it."""
    _, _, ids = store
    experiment_id, _ = ids["bagan"]
    page.add_init_script("localStorage.setItem('mlflow.workflowType_v1', JSON.stringify('genai'))")
    shoot = _open(page, f"{ui}/#/experiments/{experiment_id}", "experiment-chosen-genai.png")
    try:
        page.get_by_text("No data available").first.wait_for(state="visible", timeout=60_000)
    finally:
        shoot()
    assert not page.get_by_text("train_bagan", exact=True).first.is_visible()


def test_without_the_app_mlflow_opens_on_genai_traces(plain_ui, store, page):
    """The control (the fix removed): a plain `mlflow ui` opens the same URL on its GenAI traces page."""
    _, _, ids = store
    experiment_id, _ = ids["bagan"]
    shoot = _open(page, f"{plain_ui}/#/experiments/{experiment_id}", "experiment-without-app.png")
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
    shoot = _open(page, f"{ui}/#/experiments/{experiment_id}/runs/{run_id}/model-metrics", "bagan-run.png")
    try:
        page.get_by_text("train_bagan (ae/loss)").first.wait_for(state="visible", timeout=60_000)
        page.get_by_text("samples/by_class", exact=True).first.scroll_into_view_if_needed(timeout=30_000)
        page.wait_for_function(
            f"() => ({CARD_CONTRAST})('samples~by_class~final').length > 0", timeout=30_000
        )
        page.wait_for_function(
            f"() => ({CARD_CONTRAST})('samples~by_class%2Bstep').length > 0", timeout=30_000
        )
        card = page.locator("img[src*='samples~by_class%2Bstep']").first
        card.screenshot(path=str(SHOTS / "sample-card.png"))
        box = card.bounding_box()
        natural = card.evaluate("i => [i.naturalWidth, i.naturalHeight]")
        print(f"slider card image drawn at {box['width']:.0f} x {box['height']:.0f} px from {natural}")
    finally:
        shoot()
    final = page.evaluate(CARD_CONTRAST, "samples~by_class~final")
    slider = page.evaluate(CARD_CONTRAST, "samples~by_class%2Bstep")  # opens on step 0, which exists
    assert min(final + slider) > 10, (final, slider)
    assert natural[0] == natural[1] and abs(box["width"] - box["height"]) <= 2  # fills MLflow's square box


def test_a_classify_run_shows_every_class_auc(ui, store, page):
    _, _, ids = store
    experiment_id, run_id = ids["classify"]
    shoot = _open(page, f"{ui}/#/experiments/{experiment_id}/runs/{run_id}", "classify-run.png")
    try:
        page.get_by_text("test_auc_macro", exact=True).first.wait_for(state="visible", timeout=60_000)
        page.get_by_text("test_auc/nodule", exact=True).first.scroll_into_view_if_needed(timeout=30_000)
        body = page.locator("body").inner_text()
    finally:
        shoot()
    missing = [c for c in CLASSES if f"test_auc/{c}" not in body]
    assert not missing, f"per-class AUCs not on screen: {missing}"
