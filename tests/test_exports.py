"""The published dataset loads as is: Keras reads the ImageFolder, pyarrow the Parquet manifest,
tarfile the WebDataset shards, which later publishes leave alone unless an object they hold is
withdrawn; the card and its plots describe it. Demo site, real classifier."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from helpers import EXPECTED_KEPT
from PIL import Image
from sqlalchemy import update

from harvest.dataset.exports import write_exports
from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import run_all
from harvest.settings.config import build_config
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import Publication, utcnow
from harvest.storage import Stores, open_store


@pytest.fixture
def exported(site, classifier, monkeypatch, tmp_path):
    monkeypatch.setenv("HARVEST_EXPORTS", "all")
    monkeypatch.setenv("HARVEST_WEBDATASET_SHARD_SIZE", "3")
    monkeypatch.setenv("HARVEST_VARIANT_WIDTHS", "128,256")
    monkeypatch.setenv("HARVEST_THUMBNAIL_SIZE", "64")
    cfg = build_config({"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS)}, "manual__exports")
    reports = run_all(cfg, classifier)
    return cfg, Path(cfg.destination), reports[-1]


def test_keras_reads_the_image_folder(exported):
    import tensorflow as tf

    _, destination, _ = exported
    dataset = tf.keras.utils.image_dataset_from_directory(
        destination / "images", image_size=(64, 64), batch_size=8, shuffle=False
    )
    assert dataset.class_names == sorted(set(EXPECTED_KEPT.values()))
    images = sum(int(batch.shape[0]) for batch, _ in dataset)
    assert images == len(EXPECTED_KEPT)


def test_parquet_manifest_lists_the_whole_dataset(exported):
    import pyarrow.parquet as pq

    cfg, destination, report = exported
    table = pq.read_table(destination / "manifests" / "dataset.parquet")
    assert table.num_rows == len(EXPECTED_KEPT) == report.extra["exports"]["rows"]
    rows = table.to_pylist()
    assert sorted(row["label"] for row in rows) == sorted(EXPECTED_KEPT.values())
    for row in rows:
        assert (destination / row["key"]).is_file()
        assert row["key"] == f"images/{row['label']}/{row['sha256']}.jpg"
        assert row["score"] >= cfg.threshold and row["width"] >= 64 and row["url"].startswith("http")
    assert not any("gps" in name or "artist" in name for name in table.column_names)


def test_webdataset_shards_are_written_once_and_only_withdrawals_rewrite_them(exported):
    cfg, destination, report = exported
    shards = sorted((destination / "webdataset").glob("*.tar"))
    assert [s.name for s in shards] == ["manual__exports-00000.tar", "manual__exports-00001.tar"]
    assert report.extra["exports"]["webdataset_shards"] == 2
    samples: dict[str, set[str]] = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, set()).add(ext)
                if ext == "cls":
                    assert tar.extractfile(member).read().decode().isdigit()
    assert len(samples) == len(EXPECTED_KEPT)
    assert all(exts == {"jpg", "txt", "cls", "json"} for exts in samples.values())
    before = {s.name: s.read_bytes() for s in shards}

    # a later run finds nothing new: no shard is written again, none is added
    later = run_publish(cfg.with_(run_id=cfg.run_id, manifest_id="scheduled__2026-12-04T00:00:00+00:00"))
    assert later.extra["exports"]["webdataset_new_shards"] == 0
    assert {s.name: s.read_bytes() for s in (destination / "webdataset").glob("*.tar")} == before

    # an object taken down: only the shard holding it is written again, without it
    first = destination / "webdataset" / "manual__exports-00000.tar"
    with tarfile.open(first) as tar:
        meta = json.load(tar.extractfile(next(m for m in tar.getmembers() if m.name.endswith(".json"))))
    with session_scope(cfg.database_url) as session:
        session.execute(
            update(Publication)
            .where(Publication.destination == cfg.destination, Publication.key == meta["key"])
            .values(withdrawn_at=utcnow(), withdrawn_reason="taken down on request")
        )
    write_exports(cfg, open_store(cfg.destination), Stores(None))
    after = {s.name: s.read_bytes() for s in (destination / "webdataset").glob("*.tar")}
    assert after["manual__exports-00001.tar"] == before["manual__exports-00001.tar"]
    with tarfile.open(first) as tar:
        names = tar.getnames()
    assert len(names) == 2 * 4 and f"{meta['sha256']}.json" not in names
    listing = json.loads((destination / "webdataset" / "shards.json").read_text())
    assert sum(shard["samples"] for shard in listing["shards"]) == len(EXPECTED_KEPT) - 1


def test_dataset_card_counts_and_plots(exported):
    _, destination, _ = exported
    card = (destination / "README.md").read_text()
    for label in set(EXPECTED_KEPT.values()):
        assert f"| {label} | 1 |" in card
    assert "| 127.0.0.1 | 4 |" in card
    assert "Filters applied" in card and "Licences and attribution" in card
    for plot in ("card/sizes.png", "card/aspect_ratios.png"):
        with Image.open(destination / plot) as image:
            assert image.format == "PNG" and image.width > 100


def test_variants_are_made_once(exported):
    cfg, destination, report = exported
    assert report.extra["variants"] == 4 * 3  # two widths below every photo's width, one thumbnail
    for path in (destination / "thumbnails" / "s64").rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.size == (64, 64)
    widths = {Image.open(p).width for p in (destination / "variants" / "w128").rglob("*.jpg")}
    assert widths == {128}
    again = run_publish(cfg)
    assert again.extra["variants"] == 0 and again.done == 0


def test_manifest_and_card_are_written_by_default_and_none_turns_them_off(
    site, classifier, monkeypatch, tmp_path
):
    monkeypatch.delenv("HARVEST_EXPORTS", raising=False)
    params = {"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS)}
    cfg = build_config(params, "manual__default_exports")
    report = run_all(cfg, classifier)[-1]
    destination = Path(cfg.destination)
    assert report.extra["exports"]["rows"] == len(EXPECTED_KEPT)
    assert {"parquet", "card"} <= set(report.extra["exports"]) and "webdataset_shards" not in report.extra[
        "exports"
    ]
    for key in ("manifests/dataset.parquet", "README.md", "card/sizes.png", "card/aspect_ratios.png"):
        assert (destination / key).is_file(), key
    assert not (destination / "webdataset").exists()
    card = (destination / "README.md").read_text()
    assert "`manifests/dataset.parquet`" in card and "webdataset" not in card

    # the same run published again elsewhere, with the exports turned off
    monkeypatch.setenv("HARVEST_EXPORTS", "none")
    elsewhere = build_config({**params, "destination": str(tmp_path / "plain")}, "manual__default_exports")
    assert elsewhere.exports == ()
    again = run_publish(elsewhere)
    assert again.done == len(EXPECTED_KEPT) and "exports" not in again.extra
    published = {
        p.relative_to(elsewhere.destination).as_posix() for p in Path(elsewhere.destination).rglob("*")
    }
    assert not {"manifests/dataset.parquet", "README.md", "card"} & published
    assert manifest_key(elsewhere.run_id) in published
