"""Which images of the state DB a takedown request names, and why each one.

An image URL matches the candidates that downloaded it (as their URL or the rendition used) and every
URL that ever served its bytes; a page URL matches the images found on that page; a domain matches
the images served from it or found on its pages (subdomains included); a SHA-256 matches the
downloaded bytes or the published (metadata-stripped) copy. The match is by content afterwards:
the same bytes found anywhere else go too.
"""

from __future__ import annotations

from sqlalchemy import or_, select

from harvest.state.db import chunks, session_scope
from harvest.state.models import Candidate, Image, ImageUrl
from harvest.takedown.request import TakedownRequest
from harvest.urls import host_of


def _slash_variant(url: str) -> str:
    """The URL with its trailing slash toggled (``/a`` and ``/a/`` name one page on most sites)."""
    return url[:-1] if url.endswith("/") and not url.endswith("://") else f"{url}/"


def _under(host: str, domains: tuple[str, ...]) -> str | None:
    for domain in domains:
        if host == domain or host.endswith("." + domain):
            return domain
    return None


def _host_patterns(column, domains: tuple[str, ...]):
    """A LIKE pre-filter for URLs on these hosts (the host is then checked exactly in Python)."""
    clauses = []
    for domain in domains:
        for pattern in (f"%://{domain}/%", f"%://{domain}:%", f"%.{domain}/%", f"%.{domain}:%"):
            clauses.append(column.like(pattern))
    return or_(*clauses)


def match_images(database_url: str, request: TakedownRequest) -> dict[str, str]:
    """sha256 (of the downloaded bytes, the images table's key) -> why the request names it."""
    found: dict[str, str] = {}

    def note(sha256: str | None, why: str) -> None:
        if sha256 and sha256 not in found:
            found[sha256] = why

    with session_scope(database_url) as session:
        for chunk in chunks(list(request.image_urls), 200):
            for sha256, url in session.execute(
                select(Candidate.sha256, Candidate.url).where(
                    or_(Candidate.url.in_(chunk), Candidate.rendition_url.in_(chunk)),
                    Candidate.sha256.is_not(None),
                )
            ):
                note(sha256, f"image URL {url}")
            for sha256, url in session.execute(
                select(ImageUrl.sha256, ImageUrl.url).where(ImageUrl.url.in_(chunk))
            ):
                note(sha256, f"image URL {url}")
        # pages are stored as crawled (canonical) or as a redirect ended (final URL): both forms asked
        pages = sorted({*request.page_urls, *(_slash_variant(url) for url in request.page_urls)})
        for chunk in chunks(pages, 200):
            for sha256, page_url in session.execute(
                select(Candidate.sha256, Candidate.page_url).where(
                    Candidate.page_url.in_(chunk), Candidate.sha256.is_not(None)
                )
            ):
                note(sha256, f"found on page {page_url}")
        if request.domains:
            for sha256, url in session.execute(
                select(ImageUrl.sha256, ImageUrl.url).where(_host_patterns(ImageUrl.url, request.domains))
            ):
                domain = _under(host_of(url), request.domains)
                if domain:
                    note(sha256, f"served from domain {domain} ({url})")
            for sha256, url, page_url in session.execute(
                select(Candidate.sha256, Candidate.url, Candidate.page_url).where(
                    Candidate.sha256.is_not(None),
                    or_(
                        _host_patterns(Candidate.url, request.domains),
                        _host_patterns(Candidate.page_url, request.domains),
                    ),
                )
            ):
                domain = _under(host_of(url), request.domains) or _under(
                    host_of(page_url or ""), request.domains
                )
                if domain:
                    note(sha256, f"from domain {domain} ({url} on {page_url})")
        for chunk in chunks(list(request.sha256s), 200):
            for sha256, clean in session.execute(
                select(Image.sha256, Image.clean_sha256).where(
                    or_(Image.sha256.in_(chunk), Image.clean_sha256.in_(chunk))
                )
            ):
                note(sha256, f"sha256 {sha256 if sha256 in chunk else clean}")
    return found
