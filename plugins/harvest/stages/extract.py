"""Stage 2, link extraction: stored pages -> image candidates, one row per unique image URL per run.

Pages hide their real images behind srcset, <picture>, lazy-load attributes and thumbnails linking to
the full-size file; pages/images.py reads each of those so the download stage sees the best URL for
an image. This stage reads the run's stored pages, judges site chrome across them and writes the rows.
"""

from __future__ import annotations

import json
import logging
import pickle
import tempfile
from typing import IO

from sqlalchemy import select, update

from harvest.licences import rejection
from harvest.pages.budget import ExtractBudget, ExtractionBudgetExceeded
from harvest.pages.images import Found, PageImages, chrome_images, extract_page, markup_junk_reason
from harvest.pages.script_fed import apply_script_record, script_record_key
from harvest.pages.stylesheets import StagedSheet, stylesheet_key
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.settings.site_profiles import SiteProfile, load_site_profiles, site_profile_for
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Candidate, Page, Status
from harvest.state.shards import bucket_of
from harvest.storage import StorageError, open_store
from harvest.urls import host_of
from harvest.web.optout import OptOut, TdmRepCache, from_meta
from harvest.web.robots import RobotsCache, agent_token, robots_skip_reason

log = logging.getLogger(__name__)


def _robots_and_tdmrep(cfg: HarvestConfig) -> tuple[RobotsCache | None, TdmRepCache | None]:
    """robots.txt and tdmrep.json of each origin, read through one client of the task (guard,
    politeness, robots.txt first)."""
    if not (cfg.respect_robots or cfg.respect_optouts):
        return None, None
    from harvest.web.client import make_client

    client = make_client(cfg)
    return (client.robots if cfg.respect_robots else None), (client.tdmrep if cfg.respect_optouts else None)


def _robots_optout(reason: str | None) -> dict | None:
    """A robots.txt refusal as an opt-out record: our own group, or an AI crawler's the user obeys."""
    if not reason:
        return None
    if reason.startswith("opt-out: "):
        directive, _, found = reason.removeprefix("opt-out: ").partition(" (")
        return {"directive": directive, "found": found.rstrip(")")}
    if reason.startswith("disallowed by robots.txt of "):
        host, _, agent = reason.removeprefix("disallowed by robots.txt of ").partition(" for user agent ")
        return {"directive": f"Disallow for {agent.strip(chr(39))}", "found": f"robots.txt of {host}"}
    return None


def _robots_reason(robots: RobotsCache | None, url: str) -> str | None:
    """Disallowed images are skipped here, before download; an unreachable robots.txt leaves the
    image to the download stage, which records its own failure."""
    reason = robots_skip_reason(robots, url)
    if reason and robots is not None and robots.rules_for(url).unavailable:
        return None
    return reason


def _earlier_pages(
    cfg: HarvestConfig, store, profiles: list[SiteProfile], pages: list[Page]
) -> list[tuple[str, list[Found]]]:
    """The header/nav/footer images of pages an earlier attempt extracted, for judging site chrome
    (the only images that judgement counts); nothing is written."""
    found = []
    sheets = _StagedSheets(cfg, store)
    for page in pages:
        try:
            page_url, items = _extract_stored(cfg, store, profiles, page, sheets)
        except Exception as exc:  # noqa: BLE001 - it was extracted once; without it the judgement has less
            log.warning("extract: %s: cannot read it again to judge site chrome: %s", page.url, exc)
            continue
        found.append((page_url, [item for item in items.items if item.in_chrome]))
    return found


class _StagedSheets:
    """The run's stylesheets as the crawl stage staged them, each read from the store once."""

    def __init__(self, cfg: HarvestConfig, store):
        self.cfg, self.store = cfg, store
        self.sheets: dict[str, StagedSheet | None] = {}

    def __call__(self, url: str) -> StagedSheet | None:
        if url not in self.sheets:
            key = stylesheet_key(self.cfg.run_id, url)
            self.sheets[url] = StagedSheet.from_bytes(self.store.get(key)) if self.store.exists(key) else None
        return self.sheets[url]


def _extract_stored(
    cfg: HarvestConfig, store, profiles: list[SiteProfile], page: Page, sheets: _StagedSheets | None = None
) -> tuple[str, PageImages]:
    """(the page's final URL, what its staged HTML names), parsed with its site's profile, within
    the run's per-page budget."""
    page_url = page.final_url or page.url
    html = store.get(page.content_key)
    budget = ExtractBudget(cfg.extract_seconds, cfg.extract_max_images)
    profile = site_profile_for(profiles, host_of(page_url))
    found = extract_page(html, page_url, profile, budget, sheets or _StagedSheets(cfg, store))
    record_key = script_record_key(page.content_key)
    if store.exists(record_key):  # a rendered page: how each image was found, and its JSON-only images
        found.items = apply_script_record(found.items, json.loads(store.get(record_key)))
    return page_url, found


def _record_page_failure(cfg: HarvestConfig, page: Page, exc: Exception, report: StageReport) -> None:
    """The page is marked failed with the reason; a page over its budget says which limit it hit."""
    if isinstance(exc, ExtractionBudgetExceeded):
        error, group = f"extraction stopped, page over its budget: {exc}", "extraction budget exceeded"
    else:
        error, group = f"extraction failed: {exc}", f"extraction failed: {type(exc).__name__}"
    log.warning("extract: %s: %s", page.url, error)
    with session_scope(cfg.database_url) as session:
        session.execute(
            update(Page).where(Page.id == page.id).values(extract_status=Status.FAILED, error=error)
        )
    report.count("failed", group)


def _pages_of_run(cfg: HarvestConfig) -> tuple[list[Page], list[Page]]:
    """(pages an earlier attempt already extracted, pages still to extract) of the run's fetched pages."""
    with session_scope(cfg.database_url) as session:
        pages = session.scalars(
            select(Page)
            .where(
                Page.run_id == cfg.run_id,
                Page.status == Status.DONE,
                Page.extract_status.in_([Status.PENDING, Status.DONE]),
            )
            .order_by(Page.id)
        ).all()
    extracted = [page for page in pages if page.extract_status == Status.DONE]
    return extracted, [page for page in pages if page.extract_status == Status.PENDING]


class _Parsed:
    """What reading the pages left: the chrome images seen, and how many pages went to the spill file."""

    def __init__(self) -> None:
        self.chrome_seen: list[tuple[str, list[Found]]] = []
        self.pages = 0
        self.data_uris = 0


def _parse_pages(
    cfg: HarvestConfig,
    store,
    profiles: list[SiteProfile],
    pages: list[Page],
    spill: IO[bytes],
    report: StageReport,
) -> _Parsed:
    """Each page parsed once: its header/nav/footer images kept in memory for the chrome judgement,
    everything it names pickled to ``spill``. A page that fails is marked failed and passed over."""
    parsed = _Parsed()
    sheets = _StagedSheets(cfg, store)
    for page in pages:
        try:
            page_url, found = _extract_stored(cfg, store, profiles, page, sheets)
        except Exception as exc:  # one broken page must not stop the others
            if isinstance(exc, StorageError) and exc.transient:
                raise  # the store failed, not the page: the stage fails and a re-run reads the page again
            _record_page_failure(cfg, page, exc, report)
            continue
        parsed.chrome_seen.append((page_url, [item for item in found.items if item.in_chrome]))
        page_optout = page.optout or _optout_dict(page_optout_of(cfg, found.metas))
        pickle.dump((page.id, page_url, found.items, page_optout), spill, protocol=pickle.HIGHEST_PROTOCOL)
        parsed.pages += 1
        parsed.data_uris += found.data_uris
    return parsed


def page_optout_of(cfg: HarvestConfig, metas: list[tuple[str, str]]) -> OptOut | None:
    """The opt-out a page's meta elements declare for its images, when opt-outs are honoured."""
    if not cfg.respect_optouts:
        return None
    return from_meta(metas, agent_token(cfg.user_agent), cfg.optout_directives)


def _optout_dict(optout: OptOut | None) -> dict | None:
    return optout.as_dict() if optout is not None else None


def _image_optout(
    page_optout: dict | None, tdmrep: TdmRepCache | None, page_url: str, url: str
) -> dict | None:
    """The page's opt-out (header or meta, applying to all its images), else a tdmrep.json rule
    of the page's or the image's origin."""
    if page_optout:
        return page_optout
    if tdmrep is None:
        return None
    found = tdmrep.verdict(page_url) or tdmrep.verdict(url)
    return _optout_dict(found)


def _licence_rejection(cfg: HarvestConfig, item: Found) -> str | None:
    """The page's own word on this image's licence decides before download (it outranks the
    file's metadata): an image it licenses outside the ``licenses`` Param is not fetched."""
    licence = item.licence or {}
    if not cfg.licenses or licence.get("scope") != "image" or not licence.get("license"):
        return None
    return rejection(licence["license"], cfg.licenses)


def _candidate_row(
    cfg: HarvestConfig, page_url: str, item: Found, reason: str | None, optout: dict | None = None
) -> dict:
    licence = item.licence or {}
    return {
        "run_id": cfg.run_id,
        "url": item.url,
        "page_url": page_url,
        "source": item.source,
        "alt": item.alt,
        "title": item.title,
        "variants": item.variants or None,
        "caption": item.caption,
        "nearby_text": item.nearby_text,
        "page_fields": item.fields,
        "found_by": item.found_by,
        "shard": bucket_of(item.url),
        "status": Status.SKIPPED if reason else Status.PENDING,
        "error": reason,
        "attempts": 0,
        "optout": optout,
        "license": licence.get("license"),
        "license_evidence": licence or None,
        "author": licence.get("author"),
    }


def _write_candidates(
    cfg: HarvestConfig, spill: IO[bytes], pages: int, chrome: dict[str, str], report: StageReport
) -> int:
    """The spilled pages' images written as candidates (skipped ones with their reason), each page
    marked extracted in the same transaction; returns how many candidates are new."""
    robots, tdmrep = _robots_and_tdmrep(cfg)
    new_candidates = 0
    spill.seek(0)
    for index in range(1, pages + 1):
        page_id, page_url, items, page_optout = pickle.load(spill)
        rows = []
        for item in items:
            reason = (
                markup_junk_reason(item, cfg, roles=False)
                or chrome.get(item.url)
                or item.role
                or _robots_reason(robots, item.url)
            )
            robots_said = _robots_reason(robots, item.url) if reason and robots is not None else None
            optout = _robots_optout(robots_said) if robots_said == reason else None
            if reason is None:
                optout = _image_optout(page_optout, tdmrep, page_url, item.url)
                reason = OptOut(**optout).reason if optout else _licence_rejection(cfg, item)
            rows.append(_candidate_row(cfg, page_url, item, reason, optout))
            if reason:
                report.count("skipped", reason.split(" (")[0] if optout else reason)
        with session_scope(cfg.database_url) as session:
            new_candidates += insert_ignore(session, Candidate, rows, ["run_id", "url"])
            session.execute(update(Page).where(Page.id == page_id).values(extract_status=Status.DONE))
        report.count("done")
        if index % 50 == 0:
            log.info("extract: %d/%d pages, %d candidates", index, pages, new_candidates)
    return new_candidates


def run_extract(cfg: HarvestConfig) -> StageReport:
    """Pages are read first and written second: whether an image is site chrome (the same logo in
    the header of most pages) is only known once every page of the run has been seen. A re-run after
    an interrupted attempt reads the pages that attempt already extracted too, for that judgement
    only: from the remaining pages alone, a banner on a third of the site could pass for chrome.
    Until the judgement, what the pages name waits on disk: a crawl of a thousand gallery pages
    names a hundred thousand images."""
    report = StageReport("extract")
    store = open_store(cfg.staging, cfg.s3)
    extracted, pages = _pages_of_run(cfg)
    profiles = load_site_profiles(cfg.site_profiles_dir)
    with tempfile.TemporaryFile(prefix="extract-") as spill:
        parsed = _parse_pages(cfg, store, profiles, pages, spill, report)
        chrome = chrome_images(
            parsed.chrome_seen + (_earlier_pages(cfg, store, profiles, extracted) if pages else [])
        )
        parsed.chrome_seen = []  # only the judgement needed them
        new_candidates = _write_candidates(cfg, spill, parsed.pages, chrome, report)
    report.extra["candidates"] = new_candidates
    report.extra["data_uri_images_ignored"] = parsed.data_uris
    log.info("%s; %d new candidates", report, new_candidates)
    return report
