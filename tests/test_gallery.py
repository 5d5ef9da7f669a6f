"""How Airflow finds the gallery: one plugin module, the app mounted, the navigation entry, and a
domain package that knows nothing of either."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "plugins"

PROBE = """
import json, os, sys
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
apps, _ = plugins_manager.get_fastapi_plugins()
views, _ = plugins_manager._get_ui_plugins()
gallery_loaded_with_plugins = "harvest_ui.app" in sys.modules
print(json.dumps({
    "gallery_loaded_with_plugins": gallery_loaded_with_plugins,
    "plugins": [[p.name, str(p.source)] for p in plugins],
    "errors": errors,
    "apps": [{"prefix": a["url_prefix"], "name": a["name"], "routes": sorted(r.path for r in a["app"].app.routes)}
             for a in apps],
    "views": views,
    "from_plugins_folder": sorted(
        name for name, module in list(sys.modules.items())
        if (getattr(module, "__file__", None) or "").startswith(os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"])
    ),
}))
"""


def test_airflow_loads_exactly_the_gallery_plugin(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "HARVEST_"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(PLUGINS),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        HARVEST_HOME=str(tmp_path / "harvest-home"),
        PYTHONPATH=str(PLUGINS),
    )
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["errors"] == {}
    # the scheduler and every task load plugins too: they must not pay for importing the gallery
    assert info["gallery_loaded_with_plugins"] is False
    assert info["plugins"] == [["harvest_gallery", "$PLUGINS_FOLDER/harvest_ui_plugin.py"]]
    [app] = info["apps"]
    assert app["prefix"] == "/harvest"
    assert {"/", "/api/items", "/api/scores", "/api/stats", "/api/rethreshold"} <= set(app["routes"])
    assert info["views"] == [
        {
            "name": "Harvest gallery",
            "href": "/harvest/",
            "destination": "nav",
            "category": "browse",
            "url_route": "harvest-gallery",
        }
    ]
    # package files were imported as parts of their packages, never one by one under bare names
    bare = [m for m in info["from_plugins_folder"] if m != "harvest_ui_plugin" and "." not in m]
    assert set(bare) <= {"harvest", "harvest_ui", "harvest_airflow"}, (
        bare
    )  # the gallery reads connections as the DAG does
    assert "harvest_ui.app" in info["from_plugins_folder"]


def test_the_domain_package_imports_neither_the_gallery_nor_airflow():
    for path in (PLUGINS / "harvest").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("harvest_ui", "airflow", "fastapi")), f"{path} imports {name}"
