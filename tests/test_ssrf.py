"""The SSRF guard with private networks NOT allowed: redirects to loopback and to the cloud metadata
address are refused, and the address a socket actually connected to is checked (DNS rebinding).

The test server listens on 127.0.0.2; the only way to reach it with the guard on is the explicit
allow-list ``allowed_networks=("127.0.0.2/32",)``. Everything else keeps the production rules, so a
redirect to 127.0.0.1 (the same machine, another loopback address) must be refused.
"""

from __future__ import annotations

import socket

import pytest
from crawl_helpers import crawl_config, pages
from loopback_site import Response, html, serve

from harvest.settings.config import ConfigError
from harvest.stages.crawl import run_crawl
from harvest.web import guard as harvest_guard
from harvest.web import http as harvest_http
from harvest.web.http import AddressPolicy, FetchError, HttpClient

ALLOWED = ("127.0.0.2/32",)


def guarded(**kwargs) -> HttpClient:
    return HttpClient("ssrf-test/1.0", allow_private_networks=False, allowed_networks=ALLOWED, **kwargs)


@pytest.fixture
def server():
    with serve("127.0.0.2") as site:
        port = site.server_address[1]
        site.routes.update(
            {
                "/page": html("<p>reachable through the allow-list</p>"),
                "/to-loopback": Response(status=302, headers={"Location": f"http://127.0.0.1:{port}/page"}),
                "/to-localhost": Response(status=302, headers={"Location": f"http://localhost:{port}/page"}),
                "/to-metadata": Response(
                    status=301, headers={"Location": "http://169.254.169.254/latest/meta-data/"}
                ),
                "/to-v6-loopback": Response(status=307, headers={"Location": f"http://[::1]:{port}/page"}),
                "/to-self": Response(status=302, headers={"Location": "/page"}),
            }
        )
        yield site


def test_the_allow_listed_first_hop_is_fetched(server):
    result = guarded().get(f"{server.base}/page", 10_000)
    assert b"allow-list" in result.body


def test_a_redirect_within_the_allowed_network_is_followed(server):
    assert guarded().get(f"{server.base}/to-self", 10_000).url == f"{server.base}/page"


@pytest.mark.parametrize(
    ("path", "address"),
    [
        ("/to-loopback", "127.0.0.1"),
        ("/to-localhost", "127.0.0.1"),
        ("/to-metadata", "169.254.169.254"),
        ("/to-v6-loopback", "::1"),
    ],
)
def test_redirects_to_private_addresses_are_refused(server, path, address):
    with pytest.raises(FetchError) as info:
        guarded().get(f"{server.base}{path}", 10_000)
    assert f"non-public address {address}" in info.value.reason
    assert info.value.transient is False
    assert server.paths() == [path]  # the refused hop never reached any server


@pytest.fixture
def internal():
    """A service on 127.0.0.1 that the guard must keep the crawler away from."""
    with serve("127.0.0.1") as site:
        site.routes["/page"] = html("<p>internal</p>")
        yield site


def test_dns_rebinding_is_caught_at_the_connected_socket(monkeypatch, internal):
    """The name resolves to a public address for the check, then to loopback for the connection."""
    real = socket.getaddrinfo
    port = internal.server_address[1]
    answers = iter(["93.184.216.34", "127.0.0.1", "127.0.0.1", "127.0.0.1"])

    def rebinding(host, *args, **kwargs):
        if host == "rebind.example":
            address = next(answers)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(FetchError) as info:
        guarded().get(f"http://rebind.example:{port}/page", 10_000)
    assert info.value.reason.startswith("refused: rebind.example connected to non-public address 127.0.0.1")
    assert internal.paths() == []  # refused before a byte of the request was sent


def test_the_peer_check_allows_the_allow_listed_network():
    policy = AddressPolicy(False, ALLOWED)
    assert policy.permits("127.0.0.2") and policy.permits("8.8.8.8")
    assert not policy.permits("127.0.0.1") and not policy.permits("169.254.169.254")
    assert AddressPolicy(True).permits("127.0.0.1")


def test_the_peer_check_does_not_depend_on_the_pre_connect_check(monkeypatch, internal):
    """Switch the resolution check off entirely: the connection-level check alone still refuses."""
    monkeypatch.setattr(harvest_http, "check_url", lambda *args, **kwargs: None)
    with pytest.raises(FetchError) as info:
        guarded().get(f"{internal.base}/page", 10_000)
    assert "connected to non-public address 127.0.0.1" in info.value.reason
    assert internal.paths() == []


def test_crawl_records_a_refused_redirect_with_its_reason(tmp_path, monkeypatch, server):
    monkeypatch.setenv("HARVEST_ALLOW_PRIVATE_NETWORKS", "0")
    server.routes["/"] = html('<a href="/to-metadata">x</a> <a href="/to-loopback">y</a>')
    cfg = crawl_config(f"{server.base}/", tmp_path, HARVEST_ALLOWED_NETWORKS="127.0.0.2")
    assert cfg.allowed_networks == ("127.0.0.2/32",) and not cfg.allow_private_networks
    run_crawl(cfg)
    states = pages(cfg, server.base)
    assert states["/"][0] == "done"
    assert states["/to-metadata"][0] == "failed"
    assert "non-public address 169.254.169.254" in states["/to-metadata"][1]
    assert "non-public address 127.0.0.1" in states["/to-loopback"][1]


def test_allowed_networks_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="'not-a-net' is not an IP network"):
        crawl_config("http://example.com/", tmp_path, HARVEST_ALLOWED_NETWORKS="10.0.0.0/8,not-a-net")


def test_a_client_resolves_a_host_once_a_minute_for_its_own_check(monkeypatch):
    """The pre-connect check asks the resolver about a host once per RESOLVE_TTL per client, not
    before every request; failures are asked again, and a check outside a client asks every time."""
    asked: list[str] = []

    def counting(host, port, *args, **kwargs):
        asked.append(host)
        if host == "gone.example":
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port))]

    monkeypatch.setattr(socket, "getaddrinfo", counting)
    cache: dict = {}
    for path in ("a.jpg", "b.jpg", "c.jpg"):
        harvest_guard.check_url(f"http://cached.example/{path}", False, (), cache)
    assert asked == ["cached.example"]
    harvest_guard.check_url("http://cached.example:8080/", False, (), cache)  # another port: asked
    assert asked == ["cached.example"] * 2
    for _ in range(2):
        with pytest.raises(FetchError):
            harvest_guard.check_url("http://gone.example/", False, (), cache)
    assert asked.count("gone.example") == 2
    harvest_guard.check_url("http://cached.example/d.jpg", False)  # no cache given
    assert asked.count("cached.example") == 3
    monkeypatch.setattr(harvest_guard, "RESOLVE_TTL", 0.0)  # expired: asked again
    harvest_guard.check_url("http://cached.example/e.jpg", False, (), cache)
    assert asked.count("cached.example") == 4
