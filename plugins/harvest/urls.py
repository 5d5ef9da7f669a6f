"""URL canonicalisation, so one resource is one row no matter how a page spelled its link."""

from __future__ import annotations

import ipaddress
import posixpath
import re
import string
import zlib
from functools import lru_cache
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import re2
from publicsuffixlist import PublicSuffixList

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".avif")
TRACKING_PREFIXES = ("utm_", "pk_", "mtm_")
TRACKING_PARAMS = {
    "fbclid",
    "gclid",
    "gclsrc",
    "dclid",
    "msclkid",
    "yclid",
    "mc_cid",
    "mc_eid",
    "igshid",
    "_ga",
}
#: Session ids make one page look like endless different ones (a classic crawler trap).
SESSION_PARAMS = {
    "jsessionid",
    "phpsessid",
    "sid",
    "sessionid",
    "session_id",
    "aspsessionid",
    "cfid",
    "cftoken",
}
_PATH_SESSION = re.compile(r";(?:jsessionid|phpsessid|sessionid)=[^/?#]*", re.IGNORECASE)
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = set(string.ascii_letters + string.digits + "-._~")


def canonicalize(url: str, base: str | None = None) -> str | None:
    """Absolute, normalised form of ``url`` (resolved against ``base``); None if it is not http(s).

    Lower-cases scheme and host, drops default ports, fragments and tracking parameters, sorts the
    query and normalises percent-encoding and dot segments.
    """
    url = (url or "").strip()
    if not url:
        return None
    if base:
        url = urljoin(base, url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    try:
        host = host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        return None
    netloc = host if ":" not in host else f"[{host}]"
    if port and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = _normalize_escapes(_PATH_SESSION.sub("", parts.path) or "/")
    trailing = path.endswith("/")
    path = posixpath.normpath(path)
    if path in (".", "//"):
        path = "/"
    if trailing and not path.endswith("/"):
        path += "/"
    path = quote(path, safe="/:@!$&'()*+,;=-._~%")
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_noise_param(k)]
    query_string = urlencode(sorted(query))
    return urlunsplit((scheme, netloc, path, query_string, ""))


def _is_noise_param(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered in SESSION_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def _normalize_escapes(path: str) -> str:
    """Decode only escapes of unreserved characters; %2F and friends keep their meaning."""

    def fix(match: re.Match) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else match.group(0).upper()

    return _ESCAPE.sub(fix, path)


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


@lru_cache(maxsize=2)
def _suffix_list(accept_unknown: bool) -> PublicSuffixList:
    """The Public Suffix List as the installed package ships it: nothing is fetched at run time.
    ``accept_unknown``: a top-level label the list does not know (``.corp``) counts as a suffix."""
    return PublicSuffixList(accept_unknown=accept_unknown)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@lru_cache(maxsize=4096)
def registered_domain(host: str) -> str:
    """The site a host belongs to: its public suffix (by the Public Suffix List, private section
    included, so ``github.io`` and ``co.uk`` are suffixes) plus one label: ``www.bbc.co.uk`` ->
    ``bbc.co.uk``, while ``user.github.io`` is a site of its own. An IP address, a bare suffix or
    a single label (``localhost``) is its own site."""
    host = host.lower().rstrip(".")
    if not host or _is_ip(host):
        return host
    return _suffix_list(True).privatesuffix(host) or host


def is_public_suffix(name: str) -> bool:
    """``com``, ``co.uk``, ``github.io``: a name under which unrelated people have their sites."""
    name = name.lower().strip(".")
    return bool(name) and not _is_ip(name) and _suffix_list(False).is_public(name)


def same_site(url: str, seed_url: str) -> bool:
    return registered_domain(host_of(url)) == registered_domain(host_of(seed_url))


class PatternError(ValueError):
    """A url_allow/url_deny pattern the linear-time engine cannot run; says why."""


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the reason is returned to the caller, not printed by the library
    return options


def compile_url_pattern(pattern: str):
    """A url_allow/url_deny pattern compiled by RE2, which runs in time linear in the URL whatever
    the pattern (no backtracking): the URLs come from the sites crawled. RE2 has no backreferences
    or lookaround; such patterns raise :class:`PatternError`."""
    try:
        return re2.compile(pattern, _re2_options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else str(exc)
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise PatternError(reason) from exc


def looks_like_image(url: str) -> bool:
    return urlsplit(url).path.lower().endswith(IMAGE_EXTENSIONS)


def shard_of(url: str, num_shards: int) -> int:
    """Stable across processes and retries (unlike hash()), so a retried shard sees the same rows."""
    return zlib.crc32(url.encode("utf-8")) % num_shards
