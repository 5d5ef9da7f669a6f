"""URL-list sources: image URLs from a CSV/TSV/Parquet/JSONL file go straight to the download stage.

This is how ImageNet-style URL lists and img2dataset inputs are harvested: no crawling, the same
download -> classify -> publish stages, with an optional per-row ``label`` that quotas count against.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from sqlalchemy import update

from harvest.report import StageReport
from harvest.settings.config import HarvestConfig, is_s3
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Status
from harvest.state.shards import bucket_of
from harvest.storage import open_store
from harvest.urls import canonicalize, host_of

log = logging.getLogger(__name__)

BATCH = 1000
URL_COLUMNS = ("url", "image_url", "URL")
LABEL_COLUMNS = ("label", "class", "wnid")
TEXT_COLUMNS = ("caption", "alt", "text", "title")
PAGE_COLUMNS = ("page_url", "page")


class SourceError(ValueError):
    """The list cannot be read at all (missing, wrong format, no url column): the run stops here."""


def _first(row: dict, names: tuple[str, ...]) -> str | None:
    for name in names:
        value = row.get(name)
        if value not in (None, ""):
            return str(value).strip()
    return None


def _rows(location: str, data: bytes) -> Iterator[dict]:
    suffix = PurePosixPath(location.split("?")[0]).suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:  # pragma: no cover - pyarrow is a requirement
            raise SourceError(f"{location}: reading Parquet needs pyarrow") from exc
        table = pq.read_table(io.BytesIO(data))
        for batch in table.to_batches(max_chunksize=BATCH):
            yield from batch.to_pylist()
        return
    text = data.decode("utf-8-sig")
    if suffix in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SourceError(f"{location}: line {number} is not JSON ({exc.msg})") from exc
        return
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" or (suffix == ".txt" and "\t" in text[:4096]) else ","
        yield from csv.DictReader(io.StringIO(text), delimiter=delimiter)
        return
    raise SourceError(f"{location}: unknown list format {suffix!r}; use .csv, .tsv, .parquet or .jsonl")


def _s3_list(location: str, s3=None):
    folder, _, name = location.rpartition("/")
    return open_store(folder, s3), name


def _exists(location: str, s3=None) -> bool:
    if is_s3(location):
        store, name = _s3_list(location, s3)
        return store.exists(name)
    return Path(location).expanduser().is_file()


def _read(location: str, s3=None) -> bytes:
    """The list's bytes. A local list is read as a file, not through a store opened on its folder: the
    folder is the user's, and a store would treat it as its own."""
    if is_s3(location):
        store, name = _s3_list(location, s3)
        return store.get(name)
    return Path(location).expanduser().read_bytes()


def check_url_list(location: str, s3=None) -> None:
    """Fail before any work when the list is missing or of an unknown format. The location has passed
    build_config's checks (a local list lies in the allowed folders), so saying whether it exists tells
    nothing about the rest of the file system."""
    suffix = PurePosixPath(location.split("?")[0]).suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt", ".parquet", ".jsonl", ".ndjson", ".json"):
        raise SourceError(f"{location}: unknown list format {suffix!r}; use .csv, .tsv, .parquet or .jsonl")
    try:
        found = _exists(location, s3)
    except Exception as exc:
        raise SourceError(f"{location}: cannot reach the URL list ({exc})") from exc
    if not found:
        raise SourceError(f"{location}: the URL list does not exist")


def read_url_list(location: str, s3=None) -> Iterator[dict]:
    """Rows of the list at a local path or s3:// URI."""
    try:
        data = _read(location, s3)
    except Exception as exc:
        raise SourceError(f"{location}: cannot read the URL list ({_reason(exc)})") from exc
    yield from _rows(location, data)


def _reason(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def allowed_domain(url: str, domains: tuple[str, ...]) -> bool:
    """True when no filter is set or the URL's host is one of the domains or below one of them."""
    if not domains:
        return True
    host = host_of(url)
    return any(host == d or host.endswith("." + d) for d in domains)


def run_ingest(cfg: HarvestConfig) -> StageReport:
    """Insert the list's rows as candidates; bad rows are counted and logged, never fatal."""
    report = StageReport("ingest")
    if not cfg.url_list:
        return report
    rows: list[dict] = []
    seen_url_column = False
    for number, row in enumerate(read_url_list(cfg.url_list, cfg.s3), 1):
        raw = _first(row, URL_COLUMNS)
        seen_url_column = seen_url_column or any(name in row for name in URL_COLUMNS)
        url = canonicalize(raw or "")
        if not url:
            report.count("skipped", "not an http(s) URL")
            if number <= 20:
                log.warning("ingest: %s row %d: %r is not an http(s) URL", cfg.url_list, number, raw)
            continue
        status, error = Status.PENDING, None
        if not allowed_domain(url, cfg.domains):
            status, error = Status.SKIPPED, f"domain {host_of(url)} not in the allowed domains"
            report.count("skipped", "domain not allowed")
        rows.append(
            {
                "run_id": cfg.run_id,
                "url": url,
                "page_url": _first(row, PAGE_COLUMNS) or "",
                "source": "url_list",
                "alt": _first(row, TEXT_COLUMNS),
                "title": None,
                "label_hint": _first(row, LABEL_COLUMNS),
                "shard": bucket_of(url),
                "status": status,
                "error": error,
                "attempts": 0,
            }
        )
        if len(rows) >= BATCH:
            report.done += _insert(cfg.database_url, rows)
            rows = []
    if not seen_url_column:
        raise SourceError(f"{cfg.url_list}: no column named one of {', '.join(URL_COLUMNS)}")
    report.done += _insert(cfg.database_url, rows)
    log.info("%s from %s", report, cfg.url_list)
    return report


def _insert(database_url: str, rows: list[dict]) -> int:
    with session_scope(database_url) as session:
        return insert_ignore(session, Candidate, rows, ["run_id", "url"])


def apply_domain_filter(cfg: HarvestConfig) -> int:
    """Crawled candidates outside the allowed domains are recorded as skipped before any download."""
    if not cfg.domains:
        return 0
    skipped = 0
    with session_scope(cfg.database_url) as session:
        pending = session.execute(
            Candidate.__table__.select().where(
                Candidate.run_id == cfg.run_id, Candidate.status == Status.PENDING
            )
        ).all()
        for row in pending:
            if not allowed_domain(row.url, cfg.domains):
                session.execute(
                    update(Candidate)
                    .where(Candidate.id == row.id)
                    .values(
                        status=Status.SKIPPED,
                        error=f"domain {host_of(row.url)} not in the allowed domains",
                    )
                )
                skipped += 1
    return skipped


def run_search(cfg: HarvestConfig) -> StageReport:
    """Candidates from the search APIs: each label's terms on each API, up to ``search_limit`` hits a
    term. What the API says about an image (licence, author, its id) is kept in the candidate's
    ``source_record``. A failed search (bad key, API error, rate-limited past the retries) is
    counted and logged with its URL and reason, and the other searches go on."""
    import os

    from harvest.settings.config import search_terms_by_label
    from harvest.sources import SearchError, open_source

    report = StageReport("search")
    # endpoints and rates from the environment; the key as the run's settings resolved it
    env = {**os.environ, "HARVEST_FLICKR_API_KEY": cfg.flickr_api_key or ""}
    terms = search_terms_by_label(cfg.labels, cfg.search_terms)
    for name in cfg.search_sources:
        source = open_source(name, env, cfg.user_agent)
        for label, label_terms in terms.items():
            for term in label_terms:
                rows: list[dict] = []
                try:
                    for hit in source.search(term, cfg.search_limit):
                        row = _search_row(cfg, name, label, hit)
                        if row is None:
                            report.count("skipped", "not an http(s) URL")
                        else:
                            rows.append(row)
                except SearchError as exc:
                    report.count("failed", f"{name}: {exc.reason}")
                    log.warning("search: %s %r for %s: %s", name, term, label, exc)
                report.done += _insert(cfg.database_url, rows)
                report.extra.setdefault("hits", {}).setdefault(name, 0)
                report.extra["hits"][name] += len(rows)
        api = getattr(source, "api", None)
        if api is not None:
            report.extra.setdefault("requests", {})[name] = api.sent
    log.info("%s", report)
    return report


def _search_row(cfg: HarvestConfig, name: str, label: str, hit) -> dict | None:
    url = canonicalize(hit.url)
    if not url:
        return None
    status, error = Status.PENDING, None
    if not allowed_domain(url, cfg.domains):
        status, error = Status.SKIPPED, f"domain {host_of(url)} not in the allowed domains"
    return {
        "run_id": cfg.run_id,
        "url": url,
        "page_url": hit.page_url,
        "source": name,
        "alt": hit.title,
        "title": hit.title,
        "label_hint": label,
        "variants": [dict(v) for v in hit.variants] or None,
        "source_record": dict(hit.record),
        "shard": bucket_of(url),
        "status": status,
        "error": error,
        "attempts": 0,
    }
