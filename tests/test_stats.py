"""Per-domain statistics and the dataset index, after a real run over the demo site."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from harvest.dataset.index import build_index
from harvest.dataset.layout import manifest_key
from harvest.dataset.stats import domain_stats, format_table
from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import run_all
from harvest.settings.config import build_config
from harvest.state.db import session_scope
from harvest.state.models import Run
from harvest.storage import LocalStore


def test_domain_stats_and_index_after_a_run(site, classifier):
    cfg = build_config({"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS)}, "manual__stats")
    run_all(cfg, classifier)

    (stats,) = domain_stats(cfg.database_url, cfg.run_id)
    assert stats.domain == "127.0.0.1"
    # 11 candidates reached the network: 9 images (one served twice), a 404 and a truncated file
    assert (stats.attempted, stats.downloaded, stats.failed, stats.rejected) == (11, 9, 1, 1)
    assert stats.errors["HTTP 404"] == 1
    assert stats.success_rate == round(9 / 11, 3)
    assert stats.mean_ms is not None and stats.mean_ms >= 0 and "mean ms" in format_table([stats])
    assert "127.0.0.1" in format_table([stats])
    with session_scope(cfg.database_url) as session:
        stored = session.scalars(select(Run.counters).where(Run.run_id == cfg.run_id)).one()["domains"]
    assert stored[0]["downloaded"] == 9

    index = build_index(LocalStore(cfg.destination))
    assert index["labels"] == {"daisy": 1, "egyptian_cat": 1, "espresso": 1, "palace": 1}
    assert index["images"] == 4
    assert index["manifests"] == [{"key": manifest_key(cfg.run_id), "images": 4, "run_id": cfg.run_id}]
    assert (Path(cfg.destination) / "index.json").is_file()
