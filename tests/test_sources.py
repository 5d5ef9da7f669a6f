"""URL-list sources, quotas and domain filters, through the real download/classify/publish stages."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import candidate_states, manifest_rows
from sqlalchemy import select

from harvest.dataset.layout import manifest_key
from harvest.demo_site import DEMO_LABELS
from harvest.pipeline import prepare_run, run_all
from harvest.settings.config import ConfigError, build_config
from harvest.stages.sources import SourceError, allowed_domain, read_url_list
from harvest.state.db import session_scope
from harvest.state.models import Run
from harvest.storage import make_s3_client

LIST = [
    ("photos/chelsea.jpg", "cat"),
    ("photos/chelsea-copy.jpg", "cat"),
    ("photos/deep-cat.jpg", "cat"),
    ("photos/coffee-large.jpg", "coffee"),
    ("photos/missing.jpg", "ghost"),
    ("not a url", "junk"),
]


def _write_csv(path, site, rows=LIST):
    lines = ["url,label,caption"] + [
        f"{name if ' ' in name else f'{site}/{name}'},{label},a {label}" for name, label in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _cfg(site, url_list, run_id, **params):
    return build_config({"url_list": str(url_list), "labels": list(DEMO_LABELS), **params}, run_id)


def test_url_list_goes_through_download_classify_publish(site, classifier, tmp_path):
    cfg = _cfg(site, _write_csv(tmp_path / "urls.csv", site), "manual__list")
    reports = run_all(cfg, classifier)
    assert reports[2].stage == "ingest" and reports[2].done == 5 and reports[2].skipped == 1

    rows = manifest_rows((tmp_path / "harvest-home/dataset" / manifest_key(cfg.run_id)).read_bytes())
    assert {row["url"].removeprefix(site + "/"): row["label"] for row in rows} == {
        "photos/chelsea.jpg": "egyptian_cat",  # chelsea-copy.jpg is the same bytes: one entry
        "photos/deep-cat.jpg": "egyptian_cat",  # a mirrored copy is another image
        "photos/coffee-large.jpg": "espresso",
    }
    assert all(row["page_url"] == "" for row in rows)
    coffee = next(row for row in rows if row["label"] == "espresso")
    assert coffee["alt"] == "a coffee"
    assert candidate_states(cfg.database_url, cfg.run_id, site)["photos/missing.jpg"][0] == "failed"


def test_quota_stops_a_label_and_reports_shortfalls(site, classifier, tmp_path):
    cfg = _cfg(site, _write_csv(tmp_path / "urls.csv", site), "manual__quota", quota=1)
    cfg = cfg.with_(download_threads=1, num_shards=1)
    run_all(cfg, classifier)

    states = candidate_states(cfg.database_url, cfg.run_id, site)
    cat = [states[name] for name, label in LIST if label == "cat"]
    assert [status for status, _ in cat].count("done") == 1
    assert sorted(error for status, error in cat if status == "skipped") == ["quota of 1 met"] * 2
    with session_scope(cfg.database_url) as session:
        counters = session.scalars(select(Run.counters).where(Run.run_id == cfg.run_id)).one()
    assert counters["quota_shortfalls"] == {"ghost": {"wanted": 1, "downloaded": 0}}


def test_domain_filter_skips_other_hosts_before_download(site, classifier, tmp_path):
    cfg = build_config(
        {"seeds": [f"{site}/index.html"], "labels": list(DEMO_LABELS), "domains": ["staticflickr.com"]},
        "manual__domains",
    )
    run_all(cfg, classifier)
    states = candidate_states(cfg.database_url, cfg.run_id, site)
    assert states["photos/chelsea.jpg"] == ("skipped", "domain 127.0.0.1 not in the allowed domains")
    assert not any(status in ("done", "failed") for status, _ in states.values())
    assert allowed_domain("https://farm1.staticflickr.com/x.jpg", ("staticflickr.com",))
    assert not allowed_domain("https://evilstaticflickr.com/x.jpg", ("staticflickr.com",))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_list_formats(tmp_path, suffix):
    rows = [
        {"url": "https://a.example/1.jpg", "label": "cat"},
        {"url": "https://a.example/2.jpg", "label": ""},
    ]
    path = tmp_path / f"list{suffix}"
    if suffix == ".csv":
        path.write_text("url,label\nhttps://a.example/1.jpg,cat\nhttps://a.example/2.jpg,\n")
    elif suffix == ".tsv":
        path.write_text("url\tlabel\nhttps://a.example/1.jpg\tcat\nhttps://a.example/2.jpg\t\n")
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    assert [(row["url"], row["label"]) for row in read_url_list(str(path))] == [
        ("https://a.example/1.jpg", "cat"),
        ("https://a.example/2.jpg", ""),
    ]


def test_url_list_on_s3(site, s3, bucket, classifier, tmp_path):
    body = _write_csv(tmp_path / "urls.csv", site, LIST[3:4]).read_bytes()
    make_s3_client(s3).put_object(Bucket=bucket, Key="lists/coffee.csv", Body=body)
    cfg = build_config(
        {"url_list": f"s3://{bucket}/lists/coffee.csv", "labels": ["espresso"]}, "manual__s3list", s3=s3
    )
    run_all(cfg, classifier)
    rows = manifest_rows((tmp_path / "harvest-home/dataset" / manifest_key(cfg.run_id)).read_bytes())
    assert [row["label"] for row in rows] == ["espresso"]


def test_bad_lists_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        prepare_run(build_config({"url_list": str(tmp_path / "nope.csv"), "labels": ["goldfish"]}, "r1"))
    with pytest.raises(ConfigError, match="unknown list format"):
        prepare_run(build_config({"url_list": str(tmp_path / "list.xlsx"), "labels": ["goldfish"]}, "r2"))
    assert not (tmp_path / "harvest-home" / "state.db").exists()
    (tmp_path / "nourl.csv").write_text("link,label\nhttps://a.example/x.jpg,cat\n")
    cfg = build_config({"url_list": str(tmp_path / "nourl.csv"), "labels": ["goldfish"]}, "r3")
    prepare_run(cfg)
    from harvest.stages.sources import run_ingest

    with pytest.raises(SourceError, match="no column named one of url"):
        run_ingest(cfg)
