"""`mlflow ui --app-name cxraug` (what `make ui` runs): MLflow's own server, with its UI opening every
experiment on the runs ("Model training") instead of GenAI traces.

MLflow 3.17's UI picks that view from one browser setting alone, localStorage `mlflow.workflowType_v1`
(a JSON string; GenAI when absent), and ignores the experiment's `mlflow.experimentKind` tag. This app
serves the UI's page with a line that stores "machine_learning" there when the browser holds no choice,
so a view picked later in the UI stands. Registered in pyproject.toml's `mlflow.app` entry points."""

from __future__ import annotations

import json
from pathlib import Path

from flask import Flask, Response
from mlflow.environment_variables import _MLFLOW_SGI_NAME
from mlflow.server import app as mlflow_app

WORKFLOW_KEY = "mlflow.workflowType_v1"  # MLflow's useLocalStorage: f"{key}_v{version}", JSON values
MODEL_TRAINING = "machine_learning"
DEFAULT_VIEW_SCRIPT = (
    f"<script>try{{if(localStorage.getItem({json.dumps(WORKFLOW_KEY)})===null)"
    f"localStorage.setItem({json.dumps(WORKFLOW_KEY)},{json.dumps(json.dumps(MODEL_TRAINING))})}}"
    "catch(e){}</script>"
)


def with_default_view(html: str) -> str:
    """The UI's index.html with the default-view script first in <head>, before MLflow's bundle runs."""
    return html.replace("<head>", "<head>" + DEFAULT_VIEW_SCRIPT, 1)


def install(app: Flask) -> Flask:
    """Replace the view that serves the UI's index.html on `app` (MLflow's Flask app) by one that adds
    the default-view script. The page is sent whole with no ETag, so a page cached from a plain
    `mlflow ui` on the same port is never revalidated as current."""
    original = app.view_functions["serve"]
    index = Path(app.static_folder or "") / "index.html"

    def serve():
        if not index.exists():
            return original()  # MLflow's own "UI not built" message
        page = with_default_view(index.read_text(encoding="utf-8"))
        return Response(page, mimetype="text/html", headers={"Cache-Control": "no-cache"})

    app.view_functions["serve"] = serve
    return app


def create_app():
    """The `mlflow.app` factory: the ASGI app under uvicorn (MLflow's default server), the Flask app
    under gunicorn or waitress."""
    install(mlflow_app)
    if _MLFLOW_SGI_NAME.get() == "uvicorn":
        from mlflow.server.fastapi_app import app as fastapi_app  # wraps the same Flask app

        return fastapi_app
    return mlflow_app
