"""A state DB filled by two real pipeline runs over the demo site, shared by the gallery tests.

Run 1 keeps the four demo labels at the default threshold; run 2 asks for espresso only, at a
threshold the espresso photo does not reach, through the host name ``localhost``, so the gallery
has kept, rejected, duplicate, skipped and failed images, two runs and two domains to choose between,
and an espresso that one run kept and the other not.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import _create_database, _drop_database

from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import run_all
from harvest.settings.config import build_config
from harvest_ui.settings import GallerySettings, load_settings

RUN_ALL_LABELS = "manual__2026-11-20T10:00:00+00:00"
RUN_ESPRESSO = "manual__2026-11-21T10:00:00+00:00"
ESPRESSO_THRESHOLD = 0.99


@dataclass(frozen=True)
class Harvested:
    database_url: str
    home: Path
    site: str
    site_root: Path

    def settings(self, **overrides) -> GallerySettings:
        env = {"HARVEST_DATABASE_URL": self.database_url, "HARVEST_HOME": str(self.home), **overrides}
        return load_settings(env, use_airflow=False)


@pytest.fixture(scope="session")
def harvested(tmp_path_factory, site, site_root, classifier) -> Iterator[Harvested]:
    home = tmp_path_factory.mktemp("gallery-home")
    env = {
        "HARVEST_HOME": str(home),
        "HARVEST_ALLOW_PRIVATE_NETWORKS": "1",
        "HARVEST_SHARDS": "2",
        "HARVEST_MIN_SHARDS": "2",
    }
    name = f"harvest_test_gallery_{uuid.uuid4().hex[:8]}"
    database_url = _create_database(name)
    # the second run reaches the same server by another name, so the gallery sees two domains
    other_name = site.replace("127.0.0.1", "localhost")
    runs = [
        (RUN_ALL_LABELS, {"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS)}),
        (
            RUN_ESPRESSO,
            {"seeds": [f"{other_name}/index.html"], "labels": ["espresso"], "threshold": ESPRESSO_THRESHOLD},
        ),
    ]
    for run_id, params in runs:
        cfg = build_config(params, run_id, env=env, database_url=database_url)
        run_all(cfg, classifier)
    yield Harvested(database_url=database_url, home=home, site=site, site_root=site_root)
    _drop_database(name)
