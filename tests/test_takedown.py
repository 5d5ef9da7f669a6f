"""Takedown end to end: harvest the demo site and a second host (real crawl, real classifier,
Postgres, an S3 server and a local folder), take down one image, one page and one domain, and check
that no destination still holds them anywhere (originals, variants, thumbnails, run manifests, Parquet,
WebDataset shards, card); then the next nightly run brings back neither them nor a re-encoded copy."""

from __future__ import annotations

import io
import json
import tarfile

import pyarrow.parquet as pq
import pytest
from helpers import is_image_key, manifest_rows, sha256_file
from PIL import Image
from sqlalchemy import func, select

from harvest import demo_site
from harvest.demo_site import DEMO_LABELS, encode_jpeg
from harvest.pipeline import run_all
from harvest.settings.config import build_config
from harvest.stages.publish import run_publish
from harvest.state.db import session_scope
from harvest.state.models import BlockEntry, Candidate, Publication, Takedown
from harvest.storage import open_store
from harvest.takedown.blocklist import publish_refusals
from harvest.takedown.request import TakedownError, parse_request
from harvest.takedown.run import run_takedown

OTHER_PAGE = """<!doctype html><html><head><title>Elsewhere</title></head><body>
<h1>Our coffee</h1><img src="/coffee-mirrored.jpg" alt="An espresso, mirrored"></body></html>"""
REUPLOAD_PAGE = """<!doctype html><html><head><title>Reuploads</title></head><body>
<img src="/copy.jpg" alt="A cat"><img src="/reencoded.jpg" alt="A cat, smaller"></body></html>"""


@pytest.fixture
def other_host(tmp_path, site_root):
    """A second site on another loopback address (another host name to take down)."""
    root = tmp_path / "other"
    root.mkdir()
    coffee = Image.open(io.BytesIO((site_root / "photos/coffee-large.jpg").read_bytes()))
    (root / "coffee-mirrored.jpg").write_bytes(encode_jpeg(coffee.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    (root / "index.html").write_text(OTHER_PAGE)
    with demo_site.serve(root, host="127.0.0.2") as base:
        yield base


@pytest.fixture
def reupload_site(tmp_path, site_root):
    """Someone re-uploads the removed cat: the same bytes, and re-encoded smaller at another quality."""
    root = tmp_path / "reuploads"
    root.mkdir()
    original = (site_root / "photos/chelsea.jpg").read_bytes()
    (root / "copy.jpg").write_bytes(original)
    with Image.open(io.BytesIO(original)) as cat:
        smaller = cat.resize((cat.width * 9 // 10, cat.height * 9 // 10), Image.Resampling.LANCZOS)
        (root / "reencoded.jpg").write_bytes(encode_jpeg(smaller, quality=60))
    (root / "index.html").write_text(REUPLOAD_PAGE)
    with demo_site.serve(root) as base:
        yield base


def _objects(store) -> dict[str, bytes]:
    return {key: store.get(key) for key in store.keys("") if not key.startswith("_staging/")}


def _mentions(objects: dict[str, bytes], needles: set[str]) -> list[str]:
    """Keys of objects whose name or (text, tar or Parquet) content names one of the needles."""
    found = []
    for key, data in objects.items():
        texts = [key]
        if key.endswith(".tar"):
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                for member in tar.getmembers():
                    texts.append(member.name)
                    if member.name.endswith(".json"):
                        texts.append(tar.extractfile(member).read().decode())
        elif key.endswith(".parquet"):
            texts.append(json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str))
        elif key.endswith((".jsonl", ".md")):
            texts.append(data.decode())
        if any(needle in text for needle in needles for text in texts):
            found.append(key)
    return found


def _published_shas(objects: dict[str, bytes]) -> set[str]:
    return {key.rsplit("/", 1)[-1].split(".")[0] for key in objects if is_image_key(key)}


def test_takedown_removes_everywhere_and_later_runs_honour_it(
    site, site_root, postgres_url, s3, bucket, classifier, monkeypatch, tmp_path, request
):
    other = request.getfixturevalue("other_host")
    for name, value in {
        "HARVEST_EXPORTS": "all",
        "HARVEST_WEBDATASET_SHARD_SIZE": "2",
        "HARVEST_VARIANT_WIDTHS": "128",
        "HARVEST_THUMBNAIL_SIZE": "64",
    }.items():
        monkeypatch.setenv(name, value)
    params = {
        "seeds": [f"{site}/index.html", f"{other}/index.html"],
        "labels": list(DEMO_LABELS),
        "destination": f"s3://{bucket}/dataset",
    }
    cfg = build_config(params, "scheduled__night1", database_url=postgres_url, s3=s3)
    run_all(cfg, classifier)
    local = cfg.with_(destination=str(tmp_path / "local-dataset"))
    run_publish(local)
    s3_store, local_store = open_store(cfg.destination, s3), open_store(local.destination)

    cat = sha256_file(site_root / "photos/chelsea.jpg")
    coffee = sha256_file(site_root / "photos/coffee-large.jpg")
    china = sha256_file(site_root / "photos/china.jpg")
    flower = sha256_file(site_root / "photos/flower.jpg")
    with session_scope(postgres_url) as session:
        mirrored = session.scalar(
            select(Candidate.sha256).where(Candidate.url == f"{other}/coffee-mirrored.jpg")
        )
    first = _objects(s3_store)
    published_before = {sha for sha in (cat, coffee, china, flower, mirrored)}
    with session_scope(postgres_url) as session:
        source_of = dict(session.execute(select(Publication.content_sha256, Publication.sha256)).all())
    assert {source_of[s] for s in _published_shas(first)} == published_before, "the harvest kept all five"
    assert any(k.startswith("variants/w128/") for k in first) and any(
        k.startswith("thumbnails/") for k in first
    )
    assert any(k.startswith("webdataset/") for k in first)

    clean = {source: published for published, source in source_of.items()}
    removed = {cat, coffee, mirrored}
    needles = (
        removed | {clean[s] for s in removed} | {"coffee-mirrored.jpg", "chelsea.jpg", "coffee-large.jpg"}
    )
    assert _mentions(first, needles), "before the takedown the dataset names them"

    results = []
    for given in (
        {"image_urls": [f"{site}/photos/chelsea.jpg"], "reason": "the photographer withdrew consent"},
        {"page_urls": [f"{site}/blog/coffee.html"], "reason": "DMCA notice 2026-118"},
        {"domains": ["127.0.0.2"], "reason": "site owner opted out of datasets"},
    ):
        results.append(
            run_takedown(
                postgres_url,
                parse_request({**given, "requested_by": "legal@example.org"}),
                s3=s3,
                triggered_by="operator (manual)",
                run_id="manual__takedown",
            )
        )
    counts = [{d: (r["before"], r["after"]) for d, r in result.destinations.items()} for result in results]
    print("takedown object counts (before, after) per destination:", counts)

    after = {"s3": _objects(s3_store), "local": _objects(local_store)}
    for where, objects in after.items():
        assert not _mentions(objects, needles), where
        assert {source_of[s] for s in _published_shas(objects)} == {china, flower}, where
        table = pq.read_table(io.BytesIO(objects["manifests/dataset.parquet"]))
        assert sorted(table.column("source_sha256").to_pylist()) == sorted([china, flower]), where
        samples = set()
        for key in (k for k in objects if k.startswith("webdataset/") and k.endswith(".tar")):
            with tarfile.open(fileobj=io.BytesIO(objects[key])) as tar:
                samples |= {
                    json.loads(tar.extractfile(m).read())["source_sha256"]
                    for m in tar
                    if m.name.endswith(".json")
                }
        assert samples == {china, flower}, where
        card = objects["README.md"].decode()
        assert "2 images in 2 classes" in card and "| taken down | 3 |" in card, where
        rows = [r for k, v in objects.items() if k.endswith(".jsonl") for r in manifest_rows(v)]
        assert {r["source_sha256"] for r in rows} == {china, flower}, where
    # the S3 destination: each takedown's counts; the first one lost the cat's original, variant,
    # thumbnail, and the card, Parquet and shards were rewritten in place
    s3_counts = [c[cfg.destination] for c in counts]
    assert s3_counts[0][0] == len(first) and s3_counts[-1][1] == len(after["s3"])
    assert all(before > after_ for before, after_ in s3_counts)

    with session_scope(postgres_url) as session:
        audits = session.scalars(select(Takedown).order_by(Takedown.id)).all()
        assert [a.reason for a in audits] == [
            "the photographer withdrew consent",
            "DMCA notice 2026-118",
            "site owner opted out of datasets",
        ]
        assert all(a.requested_by == "legal@example.org" and a.finished_at for a in audits)
        assert {i["sha256"] for i in audits[0].images} == {cat}
        assert {i["sha256"] for i in audits[1].images} == {coffee, cat}  # chelsea-copy.jpg is on that page
        assert {i["sha256"] for i in audits[2].images} == {mirrored}
        assert any(
            k.startswith("images/egyptian_cat/") for k in audits[0].removed[cfg.destination]["deleted"]
        )
        assert set(audits[0].removed) == {cfg.destination, local.destination}
        blocked = set(session.execute(select(BlockEntry.kind, BlockEntry.value)).all())
        assert {("domain", "127.0.0.2"), ("page", f"{site}/blog/coffee.html"), ("sha256", cat)} <= blocked

    # the same request again: the audit record says it was done, nothing is touched
    again = run_takedown(
        postgres_url,
        parse_request({"image_urls": [f"{site}/photos/chelsea.jpg"], "reason": "asked twice"}),
        s3=s3,
    )
    assert again.already_done and again.takedown_id == results[0].takedown_id
    assert _objects(s3_store) == after["s3"]
    with session_scope(postgres_url) as session:
        assert session.scalar(select(func.count()).select_from(Takedown)) == 3

    # the next night: the same seeds plus a page re-uploading the cat (same bytes, and re-encoded)
    reuploads = request.getfixturevalue("reupload_site")
    night2 = build_config(
        {**params, "seeds": [*params["seeds"], f"{reuploads}/index.html"]},
        "scheduled__night2",
        database_url=postgres_url,
        s3=s3,
    )
    reports = run_all(night2, classifier)
    publish = reports[-1]
    with session_scope(postgres_url) as session:
        states = dict(
            session.execute(
                select(Candidate.url, Candidate.error).where(Candidate.run_id == night2.run_id)
            ).all()
        )
        reencoded = session.scalar(
            select(Candidate.sha256).where(
                Candidate.run_id == night2.run_id, Candidate.url == f"{reuploads}/reencoded.jpg"
            )
        )
    for url in (
        f"{site}/photos/chelsea.jpg",
        f"{site}/photos/coffee-large.jpg",
        f"{site}/photos/chelsea-copy.jpg",
        f"{other}/coffee-mirrored.jpg",
    ):
        assert "taken down" in (states[url] or ""), url
    assert reencoded and reencoded != cat, "the re-encoded copy was downloaded: other bytes"
    refusal = publish_refusals(postgres_url, [reencoded])[reencoded]
    assert "near copy of removed image " + cat in refusal
    assert publish.reasons["taken down"] == 2  # the copy by its hash, the re-encoded one by its phash
    night2_objects = _objects(s3_store)
    assert not _mentions(night2_objects, needles | {reencoded})
    assert {source_of.get(s, s) for s in _published_shas(night2_objects)} == {china, flower}


def test_a_request_names_something_and_says_why():
    with pytest.raises(TakedownError) as caught:
        parse_request({"image_urls": ["ftp://x/y.jpg"], "domains": ["not a host"], "sha256s": ["abc"]})
    assert len(caught.value.problems) == 4  # three bad values and no reason
    with pytest.raises(TakedownError, match="name at least one"):
        parse_request({"reason": "because"})
    same = parse_request({"image_urls": ["HTTP://Example.org/a.jpg#x"], "reason": "one"})
    other = parse_request({"image_urls": ["http://example.org/a.jpg"], "reason": "two"})
    assert same.key == other.key and same.image_urls == ("http://example.org/a.jpg",)


def test_cli_takedown_blocks_ahead_of_any_harvest_and_runs_once(tmp_path, capsys):
    """A domain taken down before anything was harvested from it: nothing to remove, but blocked."""
    from harvest.cli import main
    from harvest.takedown.blocklist import load_blocklist

    db = f"sqlite:///{tmp_path / 'state.db'}"
    params = json.dumps({"domains": ["photos.example.org"], "reason": "opt-out", "requested_by": "owner"})
    assert main(["takedown", "--params", params, "--database-url", db]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["already_done"] is False and first["images"] == 0
    blocklist = load_blocklist(db)
    assert blocklist.download_reason("https://cdn.photos.example.org/a.jpg", None, None).startswith(
        "taken down: blocked domain photos.example.org"
    )
    assert blocklist.download_reason("https://example.org/a.jpg", "https://photos.example.org/p", None)
    assert blocklist.download_reason("https://example.org/a.jpg", "https://example.org/p", None) is None
    assert main(["takedown", "--params", params, "--database-url", db]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["already_done"] is True
    assert main(["takedown", "--params", json.dumps({"domains": ["x.example"]}), "--database-url", db]) == 2


def test_a_takedown_cut_off_half_way_is_finished_by_running_it_again(
    site, site_root, postgres_url, s3, bucket, tmp_path
):
    """The S3 server is unreachable when the takedown reaches it: the local destination is clean, the
    audit record unfinished; the same request run again finishes the S3 destination and records both."""
    from conftest import free_port
    from stage_setup import make_config, record_answers, seed_candidates

    from harvest.settings.config import S3Options
    from harvest.stages.download import run_download

    cfg = make_config(postgres_url, "manual__resume", f"s3://{bucket}/dataset", s3=s3)
    seed_candidates(cfg, [f"{site}/photos/chelsea.jpg", f"{site}/photos/coffee-large.jpg"])
    run_download(cfg, 0)
    cat, coffee = (
        sha256_file(site_root / "photos/chelsea.jpg"),
        sha256_file(site_root / "photos/coffee-large.jpg"),
    )
    record_answers(cfg, {cat: "egyptian_cat", coffee: "espresso"})
    local = cfg.with_(destination=str(tmp_path / "local"))
    assert run_publish(cfg).done == 2 and run_publish(local).done == 2
    s3_store, local_store = open_store(cfg.destination, s3), open_store(local.destination)
    before = {"s3": len(_objects(s3_store)), "local": len(_objects(local_store))}

    request = parse_request({"sha256s": [cat], "reason": "withdrawn"})
    nowhere = S3Options(f"http://127.0.0.1:{free_port()}", "k", "s", "us-east-1")
    with pytest.raises(Exception):  # noqa: B017 - whatever the S3 client raises when no server answers
        run_takedown(postgres_url, request, s3=nowhere)
    with session_scope(postgres_url) as session:
        audit = session.scalars(select(Takedown)).one()
        assert audit.finished_at is None and set(audit.removed) == {local.destination}
    assert len(_objects(local_store)) < before["local"] and len(_objects(s3_store)) == before["s3"]

    done = run_takedown(postgres_url, request, s3=s3)
    assert not done.already_done and set(done.destinations) == {local.destination, cfg.destination}
    assert done.destinations[local.destination]["before"] == before["local"]  # from the first attempt
    assert done.destinations[cfg.destination]["before"] == before["s3"]
    for store in (s3_store, local_store):
        assert not [k for k in _objects(store) if "egyptian_cat" in k]
        assert [k for k in _objects(store) if k.startswith("images/espresso/")]
    assert run_takedown(postgres_url, request, s3=s3).already_done
