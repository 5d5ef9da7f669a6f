"""Stage 1, seed crawl: breadth-first fetch of pages from the seeds, within depth/page/domain limits.

The frontier *is* the ``pages`` table: a page row is inserted when it is discovered and marked done
(with its children inserted) in one transaction, so a crashed or retried crawl resumes where it was.
Every fetch asks robots.txt first and goes through the shared per-host politeness gate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select, update

from harvest.pages.base_href import document_base, parse_page
from harvest.pages.htmltext import html_text
from harvest.pages.images import extract_page, markup_junk_reason
from harvest.pages.script_fed import render_reason, script_record, script_record_key
from harvest.pages.site_selectors import followed_links
from harvest.pages.stylesheets import StagedSheet, decode_css, import_urls, stylesheet_key, stylesheet_links
from harvest.report import StageReport
from harvest.settings.config import HarvestConfig
from harvest.settings.site_profiles import SiteProfile, load_site_profiles, render_mode, site_profile_for
from harvest.state.db import insert_ignore, session_scope
from harvest.state.models import Page, Status, utcnow
from harvest.state.retry import page_failure_may_pass, reopen_failed
from harvest.storage import open_store
from harvest.urls import canonicalize, host_of, looks_like_image, same_site
from harvest.web.client import make_client, record_paces
from harvest.web.http import NOT_MODIFIED as HTTP_NOT_MODIFIED
from harvest.web.http import FetchError, FetchResult, HopRefused, HttpClient
from harvest.web.optout import from_headers
from harvest.web.render import Renderer
from harvest.web.revalidate import NOT_MODIFIED, UNCHANGED, Known, known_pages
from harvest.web.robots import RobotsCache, agent_token
from harvest.web.scope import Scope

log = logging.getLogger(__name__)

HTML_TYPES = {"text/html", "application/xhtml+xml"}
#: rendered pages named in the crawl report (the count covers them all)
RENDER_EXAMPLES = 20
BATCH = 16


def page_links(html: bytes, page_url: str, honour_nofollow: bool = False) -> list[str]:
    """Canonical URLs of the pages a page links to (not images, not other schemes)."""
    parsed = parse_page(html, page_url)
    if parsed is None:
        return []
    doc, base = parsed
    links: list[str] = []
    seen: set[str] = set()
    for anchor in doc.xpath("//a[@href]"):
        if honour_nofollow and "nofollow" in (anchor.get("rel") or "").lower().split():
            continue
        url = canonicalize(str(anchor.get("href")), base)
        if url and url not in seen and not looks_like_image(url):
            seen.add(url)
            links.append(url)
    return links


def profile_links(html: bytes, page_url: str, profile: SiteProfile) -> list[str]:
    """Only the links a site profile's ``follow`` selectors name (e.g. the "Next" of a pagination)."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html_text(html), "lxml")
    base_tag = soup.find("base", href=True)
    return followed_links(
        soup, page_url, document_base(page_url, base_tag["href"] if base_tag else None), profile
    )


def seed_pages(cfg: HarvestConfig) -> int:
    rows = []
    for seed in cfg.seeds:
        url = canonicalize(seed)
        if url:
            rows.append({"run_id": cfg.run_id, "url": url, "seed_url": url, "depth": 0})
    with session_scope(cfg.database_url) as session:
        return insert_ignore(session, Page, [_page_defaults(r) for r in rows], ["run_id", "url"])


def _page_defaults(row: dict) -> dict:
    return {"status": Status.PENDING, "extract_status": Status.PENDING, "attempts": 0, **row}


def _retry_failed(cfg: HarvestConfig) -> None:
    """Give pages that failed for a passing reason (no answer, 5xx, 429) another go on a re-run."""
    reopen_failed(
        cfg.database_url, Page, cfg.max_attempts, page_failure_may_pass(), Page.run_id == cfg.run_id
    )


class RobotsDisallowed(Exception):
    """robots.txt forbids the page; recorded as skipped, never retried in this run."""


def _robots_check(robots: RobotsCache):
    """The hop check of a fetch: robots.txt is asked for each hop; an unreachable robots.txt is a
    passing failure, not a refusal."""

    def robots_check(hop: str) -> str | None:
        reason = robots.skip_reason(hop)
        if reason and robots.rules_for(hop).unavailable:
            raise FetchError(hop, reason, transient=True)
        return reason

    return robots_check


class Stylesheets:
    """The run's linked stylesheets, each fetched once with the pages' client (robots, politeness,
    the network guard) under ``max_stylesheet_bytes``, and staged for the extract stage with its
    final URL, or with the reason it could not be read. The sheets a sheet @imports are fetched
    too, one level deep."""

    def __init__(self, cfg: HarvestConfig, client: HttpClient, store, report: StageReport):
        self.cfg, self.client, self.store, self.report = cfg, client, store, report
        self.seen: dict[str, StagedSheet] = {}
        # the automatic render mode stages a page's sheets from the fetch threads (_render)
        self.lock = threading.RLock()

    @property
    def counts(self) -> dict:
        return self.report.extra.setdefault("stylesheets", {"fetched": 0, "failed": {}})

    def stage_page(self, html: bytes, page_url: str) -> None:
        """The page's own site's stylesheets (a library or web-font sheet on a third-party CDN names
        no photo of the site's, and is not fetched)."""
        for url in stylesheet_links(html, page_url):
            if not same_site(url, page_url):
                continue
            sheet = self.sheet(url)
            if sheet.css:
                for imported in import_urls(sheet.css, sheet.url):
                    if same_site(imported, page_url):
                        self.sheet(imported)

    def staged(self, url: str) -> StagedSheet | None:
        """The sheet if this crawl has staged it already (nothing is fetched)."""
        return self.seen.get(url)

    def sheet(self, url: str) -> StagedSheet:
        with self.lock:
            return self._sheet(url)

    def _sheet(self, url: str) -> StagedSheet:
        if url in self.seen:
            return self.seen[url]
        key = stylesheet_key(self.cfg.run_id, url)
        if self.store.exists(key):  # an earlier attempt of this run fetched it
            sheet = StagedSheet.from_bytes(self.store.get(key))
        else:
            sheet, lasting = self._fetch(url)
            if lasting:
                self.store.put(key, sheet.to_bytes(), "application/json")
        self.seen[url] = sheet
        return sheet

    def _fetch(self, url: str) -> tuple[StagedSheet, bool]:
        """(the sheet or why it has none, whether that holds for the rest of the run)."""
        try:
            result = self.client.get(
                url,
                self.cfg.max_stylesheet_bytes,
                accept="text/css,*/*;q=0.1",
                hop_check=_robots_check(self.client.robots),
            )
        except HopRefused as exc:
            return self._failed(url, f"robots.txt: {exc.reason}"), True
        except FetchError as exc:
            return self._failed(url, exc.reason), not exc.transient
        if result.content_type in HTML_TYPES:
            return self._failed(url, f"not a stylesheet ({result.content_type})"), True
        self.counts["fetched"] += 1
        return StagedSheet(result.url, decode_css(result.body)), True

    def _failed(self, url: str, reason: str) -> StagedSheet:
        failed = self.counts["failed"]
        failed[reason] = failed.get(reason, 0) + 1
        log.warning("crawl: stylesheet %s not read: %s", url, reason)
        return StagedSheet(url, error=reason)


def _static_images(
    cfg: HarvestConfig, html: bytes, page_url: str, stylesheets: Stylesheets | None = None
) -> tuple[list[str], int]:
    """(the image URLs the HTML as sent names, how many of them are content: not junk, chrome or a
    role). With ``stylesheets``, the page's own sheets are staged first and their backgrounds count:
    a theme page whose photo is a stylesheet background is not script-fed."""
    if stylesheets is not None:
        stylesheets.stage_page(html, page_url)
    items = extract_page(html, page_url, stylesheets=stylesheets.staged if stylesheets else None).items
    content = [i for i in items if not i.in_chrome and not markup_junk_reason(i, cfg)]
    return [item.url for item in items], len(content)


def _render(
    cfg: HarvestConfig,
    renderer: Renderer,
    result: FetchResult,
    mode: str,
    scripted: dict[str, dict],
    stylesheets: Stylesheets | None = None,
) -> FetchError | None:
    """The page rendered when its mode says so ("always", or "auto" and :func:`render_reason`):
    its body becomes the DOM, and what its scripts fetched is noted in ``scripted`` by URL."""
    sheets = stylesheets if mode == "auto" else None
    static, content = _static_images(cfg, result.body, result.url, sheets)
    reason = "its site profile says render: true" if mode == "always" else None
    reason = reason or render_reason(result.body, result.url, content)
    if reason is None:
        return None
    try:
        rendered = renderer.render_page(result.url, result.body, result.content_type or "text/html")
    except Exception as exc:  # the browser failing is this page's failure, not the crawl's
        return FetchError(result.url, f"rendering failed: {exc}")
    result.body = rendered.html
    scripted[result.url] = script_record(rendered, result.url, reason, static)
    return None


def _fetch(
    client: HttpClient,
    robots: RobotsCache,
    cfg: HarvestConfig,
    url: str,
    renderer: Renderer | None = None,
    headers: dict[str, str] | None = None,
    mode: str = "always",
    scripted: dict[str, dict] | None = None,
    stylesheets: Stylesheets | None = None,
) -> FetchResult | FetchError | RobotsDisallowed:
    """robots.txt is asked for the page and for every redirect target before it is requested; a
    page whose render ``mode`` asks for it is handed to the browser afterwards. With conditional
    ``headers`` the result may be a 304 without a body."""
    try:
        result = client.get(
            url,
            cfg.max_page_bytes,
            accept="text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
            hop_check=_robots_check(robots),
            headers=headers,
        )
        if result.status == HTTP_NOT_MODIFIED:
            return result
        if renderer is not None and mode != "never" and result.content_type in HTML_TYPES | {""}:
            failed = _render(cfg, renderer, result, mode, {} if scripted is None else scripted, stylesheets)
            if failed is not None:
                return failed
        return result
    except HopRefused as exc:
        return RobotsDisallowed(exc.reason if exc.url == url else f"redirected to {exc.url}: {exc.reason}")
    except FetchError as exc:
        return exc


def _stage_script_record(store, result: FetchResult, record: dict | None, report: StageReport) -> None:
    """A rendered page's script record, staged beside the HTML it will be stored as, and counted."""
    if record is None or result.status == HTTP_NOT_MODIFIED:
        return
    key = f"pages/{hashlib.sha256(result.body).hexdigest()}.html"
    store.put(script_record_key(key), json.dumps(record).encode(), "application/json")
    counts = report.extra.setdefault(
        "render",
        {
            "pages": 0,
            "seconds": 0.0,
            "json_images": 0,
            "blobs_traced": 0,
            "blobs_untraced": {},
            "examples": [],
        },
    )
    counts["pages"] += 1
    if len(counts["examples"]) < RENDER_EXAMPLES:
        counts["examples"].append(result.url)
    counts["seconds"] = round(counts["seconds"] + record["seconds"], 3)
    counts["json_images"] += len(record["json_images"])
    for blob in record["blobs"]:
        if blob["response_url"]:
            counts["blobs_traced"] += 1
        else:
            untraced = counts["blobs_untraced"]
            untraced[blob["reason"]] = untraced.get(blob["reason"], 0) + 1
            log.warning(
                "crawl: %s: blob image %s not traced: %s", result.url, blob["blob_url"], blob["reason"]
            )


def _known_urls(cfg: HarvestConfig) -> list[str]:
    with session_scope(cfg.database_url) as session:
        return list(session.scalars(select(Page.url).where(Page.run_id == cfg.run_id)).all())


def run_crawl(cfg: HarvestConfig) -> StageReport:
    report = StageReport("crawl")
    seed_pages(cfg)
    _retry_failed(cfg)
    client = make_client(cfg)
    robots = client.robots
    scope = Scope(cfg, _known_urls(cfg))
    profiles = load_site_profiles(cfg.site_profiles_dir)
    rendering = cfg.render == "auto" or any(p.render for p in profiles)
    renderer = Renderer(client, robots) if rendering else None
    scripted: dict[str, dict] = {}  # what rendered pages' scripts fetched, by final URL, until recorded

    store = open_store(cfg.staging, cfg.s3)
    stylesheets = Stylesheets(cfg, client, store, report)

    def fetch(job: tuple[Page, Known | None]) -> FetchResult | FetchError | RobotsDisallowed:
        page, known = job
        mode = render_mode(site_profile_for(profiles, host_of(page.url)), cfg.render)
        # a conditional GET only when the earlier HTML is still there to stand in for the body
        headers = known.headers() if known is not None and store.exists(known.content_key) else None
        return _fetch(client, robots, cfg, page.url, renderer, headers, mode, scripted, stylesheets)

    started = time.monotonic()
    try:
        with ThreadPoolExecutor(max_workers=4, thread_name_prefix="crawl") as pool:
            while True:
                with session_scope(cfg.database_url) as session:
                    batch = session.scalars(
                        select(Page)
                        .where(Page.run_id == cfg.run_id, Page.status == Status.PENDING)
                        .order_by(Page.depth, Page.id)
                        .limit(BATCH)
                    ).all()
                if not batch:
                    break
                known = known_pages(cfg.database_url, cfg.run_id, [page.url for page in batch])
                results = list(pool.map(fetch, [(page, known.get(page.url)) for page in batch]))
                for page, result in zip(batch, results, strict=True):
                    if isinstance(result, FetchResult):
                        _stage_script_record(store, result, scripted.pop(result.url, None), report)
                    _record(
                        cfg, store, scope, profiles, page, result, report, known.get(page.url), stylesheets
                    )
                log.info(
                    "crawl: %d pages fetched (%d not modified, %d unchanged), %d failed, %d skipped "
                    "(%.1f pages/s)",
                    report.done,
                    report.extra.get(NOT_MODIFIED, 0),
                    report.extra.get(UNCHANGED, 0),
                    report.failed,
                    report.skipped,
                    report.done / max(time.monotonic() - started, 1e-6),
                )
    finally:
        if renderer is not None:
            renderer.close()
    with session_scope(cfg.database_url) as session:
        report.extra["pages_total"] = session.scalar(
            select(func.count()).select_from(Page).where(Page.run_id == cfg.run_id)
        )
    record_paces(cfg, client)
    paused = client.gate.paused_hosts()
    if paused:
        report.extra["paused_hosts"] = paused
        for reason in paused.values():
            log.warning("crawl: %s", reason)
    log.info("%s", report)
    return report


def _record(
    cfg: HarvestConfig,
    store,
    scope: Scope,
    profiles: list[SiteProfile],
    page: Page,
    result: FetchResult | FetchError | RobotsDisallowed,
    report: StageReport,
    known: Known | None = None,
    stylesheets: Stylesheets | None = None,
) -> None:
    values: dict = {"attempts": page.attempts + 1, "fetched_at": utcnow(), "revalidation": None}
    children: list[str] = []
    if isinstance(result, RobotsDisallowed):
        values.update(status=Status.SKIPPED, error=f"{page.url}: {result}")
        report.count("skipped", str(result))
    elif isinstance(result, FetchError):
        values.update(status=Status.FAILED, http_status=result.status, error=str(result))
        report.count("failed", result.reason)
        log.warning("crawl: %s", result)
    elif result.status != HTTP_NOT_MODIFIED and result.content_type and result.content_type not in HTML_TYPES:
        values.update(
            status=Status.SKIPPED,
            http_status=result.status,
            final_url=result.url,
            error=f"not an HTML page ({result.content_type})",
        )
        report.count("skipped", values["error"])
    else:
        if result.status == HTTP_NOT_MODIFIED and known is not None:
            key = known.content_key
            result.body = store.get(key)  # the earlier run's HTML: extraction and links as before
            revalidation = NOT_MODIFIED
        else:
            key = f"pages/{hashlib.sha256(result.body).hexdigest()}.html"
            store.put_new(key, result.body, "text/html")
            revalidation = UNCHANGED if known is not None and known.content_key == key else None
        values.update(
            status=Status.DONE,
            http_status=result.status,
            final_url=result.url,
            content_key=key,
            error=None,
            etag=result.headers.get("etag") or (known.etag if known else None),
            last_modified=result.headers.get("last-modified") or (known.last_modified if known else None),
            revalidation=revalidation,
            optout=_page_optout(cfg, result),
        )
        report.count("done")
        if stylesheets is not None:
            stylesheets.stage_page(result.body, result.url)
        if revalidation:
            report.extra[revalidation] = report.extra.get(revalidation, 0) + 1
        if page.depth < cfg.max_depth:
            profile = site_profile_for(profiles, host_of(result.url))
            if profile is not None and profile.follow:
                children = profile_links(result.body, result.url, profile)
            else:
                children = page_links(result.body, result.url, cfg.honour_nofollow)
    with session_scope(cfg.database_url) as session:
        session.execute(update(Page).where(Page.id == page.id).values(**values))
        if children:
            _add_children(session, cfg, scope, page, children, report)


def _page_optout(cfg: HarvestConfig, result: FetchResult) -> dict | None:
    """An X-Robots-Tag or tdm-reservation header of the page: its images are skipped at extraction
    (its links are still followed: the directives concern its content, not the pages it links to)."""
    if not cfg.respect_optouts:
        return None
    found = from_headers(result.headers, agent_token(cfg.user_agent), cfg.optout_directives, "the page")
    if found is not None:
        log.info("crawl: %s: %s", result.url, found.reason)
    return found.as_dict() if found is not None else None


def _add_children(
    session, cfg: HarvestConfig, scope: Scope, page: Page, children: list[str], report: StageReport
) -> None:
    total = session.scalar(select(func.count()).select_from(Page).where(Page.run_id == cfg.run_id)) or 0
    room = cfg.max_pages - total
    if room <= 0:
        return
    known = set(
        session.scalars(select(Page.url).where(Page.run_id == cfg.run_id, Page.url.in_(children))).all()
    )
    refused: dict[str, int] = report.extra.setdefault("links_refused", {})
    new: list[str] = []
    for url in children:
        if url in known or len(new) >= room:
            continue
        reason = scope.refusal(url, page.seed_url)
        if reason:
            key = reason if not reason.startswith("more than") else "too many query variants of one path"
            refused[key] = refused.get(key, 0) + 1
            continue
        scope.admitted(url)
        known.add(url)
        new.append(url)
    rows = [
        _page_defaults({"run_id": cfg.run_id, "url": url, "seed_url": page.seed_url, "depth": page.depth + 1})
        for url in new
    ]
    insert_ignore(session, Page, rows, ["run_id", "url"])
