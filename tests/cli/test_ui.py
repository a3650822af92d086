"""cxraug's MLflow app (`mlflow ui --app-name cxraug`, what `make ui` runs): the UI page it serves makes
"Model training" a new browser's default view. The browser itself is tests/ui/test_mlflow_ui.py (slow)."""

import inspect
import json
import re
import tomllib

from flask import Flask

from cxraug.cli import ui
from tests.helpers import REPO

PAGE = '<!doctype html><html><head><meta charset="utf-8"/><script defer src="main.js"></script></head></html>'


def _toy_mlflow(tmp_path) -> Flask:
    """A Flask app shaped like MLflow's: its UI page served by the view named `serve`."""
    (tmp_path / "index.html").write_text(PAGE)
    app = Flask("toy", static_folder=str(tmp_path))

    @app.route("/")
    def serve():
        return app.send_static_file("index.html")

    @app.route("/api")
    def api():
        return {"ok": True}

    return ui.install(app)


def test_pyproject_registers_the_app_as_an_mlflow_factory():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["mlflow.app"]["cxraug"]
    module, name = target.split(":")
    assert module == ui.__name__ and inspect.isfunction(getattr(ui, name))  # MLflow calls functions


def test_the_page_stores_model_training_only_where_the_browser_holds_no_choice():
    script = ui.DEFAULT_VIEW_SCRIPT
    (key,) = set(re.findall(r'getItem\(("[^"]+")\)', script))
    set_key, value = re.search(r'setItem\(("[^"]+"),("(?:\\.|[^"\\])*")\)', script).groups()
    assert json.loads(key) == json.loads(set_key) == "mlflow.workflowType_v1"  # useLocalStorage: key_v1
    assert json.loads(json.loads(value)) == "machine_learning"  # stored JSON.stringify'd, read JSON.parse'd
    assert "===null" in script  # a choice the user made later in the UI is left alone


def test_the_ui_page_carries_the_script_before_mlflows_bundle_and_is_never_a_stale_cache(tmp_path):
    client = _toy_mlflow(tmp_path).test_client()
    page = client.get("/", headers={"If-None-Match": '"an etag from a plain mlflow ui"'})
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert html.startswith("<!doctype html><html><head>" + ui.DEFAULT_VIEW_SCRIPT)
    assert html.index(ui.DEFAULT_VIEW_SCRIPT) < html.index("main.js")
    assert html.replace(ui.DEFAULT_VIEW_SCRIPT, "") == PAGE
    assert "ETag" not in page.headers and page.headers["Cache-Control"] == "no-cache"
    assert client.get("/api").get_json() == {"ok": True}  # every other route as it was
