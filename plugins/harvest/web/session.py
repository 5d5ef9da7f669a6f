"""The per-thread requests session: guarded connections, the hop's deadline on every response wait,
and a fast path for the plain GETs that make up nearly every request."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import extract_cookies_to_jar
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from harvest.web.bounded_cache import remember
from harvest.web.deadline import getresponse_within_deadline
from harvest.web.guard import AddressPolicy, checked_socket
from harvest.web.plain_get import PlainResponse, prepared_url, send_plain


def guarded_adapter(policy: AddressPolicy) -> HTTPAdapter:
    """An adapter whose new connections check their peer address before any byte is sent, and
    whose wait for a response ends at the hop's total deadline."""

    class GuardedHTTPConnection(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            return checked_socket(self, super()._new_conn(), policy)

        def getresponse(self, *args, **kwargs):
            return getresponse_within_deadline(self, super().getresponse, *args, **kwargs)

    class GuardedHTTPSConnection(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            return checked_socket(self, super()._new_conn(), policy)

        def getresponse(self, *args, **kwargs):
            return getresponse_within_deadline(self, super().getresponse, *args, **kwargs)

    class GuardedHTTPPool(HTTPConnectionPool):
        ConnectionCls = GuardedHTTPConnection

    class GuardedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = GuardedHTTPSConnection

    class GuardedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}

    return GuardedAdapter()


class FastSession(requests.Session):
    """A requests.Session that reads the proxy and CA settings from the environment once per origin:
    requests scans the whole of os.environ for them on every request, which costs about as much as
    parsing the response."""

    def __init__(self) -> None:
        super().__init__()
        self._settings: dict[tuple, dict] = {}
        #: connection pools of the plain GETs, per origin (harvest.web.plain_get)
        self._pools: dict[tuple, object] = {}

    def merge_environment_settings(self, url: str, proxies, stream, verify, cert) -> dict:
        if proxies or cert is not None or verify not in (None, True):
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, verify)
        settings = self._settings.get(key)
        if settings is None:
            settings = remember(
                self._settings, key, super().merge_environment_settings(url, {}, stream, verify, cert)
            )
        return {**settings, "proxies": dict(settings["proxies"])}

    def get_streamed(
        self, url: str, headers: dict[str, str], timeout: tuple[float, float]
    ) -> requests.Response | PlainResponse:
        """``get(url, headers=headers, timeout=timeout, stream=True, allow_redirects=False)``
        without the layers of Session.request and Session.send that a GET without redirects, hooks
        or a body does not need, and that cost more CPU than the adapter's whole request (copying
        the cookie jar, merging settings, resolving the redirect it will not follow). Same headers,
        cookies, proxies and certificate settings; only ~/.netrc is not read: its credentials are
        never sent to the servers a crawl happens upon. A GET with no proxy and no cookie to send
        skips the adapter's own layers too (harvest.web.plain_get)."""
        merged = CaseInsensitiveDict(self.headers)
        merged.update(headers)
        request = prepared_url(url)
        settings = self.merge_environment_settings(request.url, {}, True, None, None)
        if not settings["proxies"] and settings["cert"] is None and not self.cookies:
            adapter = self.get_adapter(request.url)
            response = send_plain(adapter, self._pools, request, merged, timeout, settings["verify"])
        else:
            request = requests.PreparedRequest()  # the URL prepares as above: the settings stand
            request.prepare(method="GET", url=url, headers=merged, cookies=self.cookies)
            response = self.get_adapter(request.url).send(request, timeout=timeout, **settings)
        if "set-cookie" in response.headers:
            extract_cookies_to_jar(self.cookies, request, response.raw)
        return response
