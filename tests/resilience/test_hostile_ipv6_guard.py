"""IPv6 addresses that stand for an IPv4 address reach that IPv4 host: NAT64 (64:ff9b::/96), 6to4
(2002::/16), Teredo (2001::/32, the client stored XOR 0xffffffff), IPv4-mapped, -translated and
-compatible forms. The SSRF guard judges them by the IPv4 address inside, so ``64:ff9b::a9fe:a9fe``
is the cloud metadata address 169.254.169.254 and is refused; the local-use NAT64 prefix
64:ff9b:1::/48 and deprecated site-local fec0::/10 are refused outright.

The guard is tested as a function on many addresses and through real requests: a loopback site
(127.0.0.2, the only allow-listed network) redirects to the embedded forms of other loopback and
link-local addresses, and each hop must be refused by the guard before any connection. A tripwire
(an audit hook, active during those requests only) turns any connection outside loopback into a
failed test rather than traffic.
"""

from __future__ import annotations

import ipaddress
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from loopback_site import Response, html, serve

from harvest.web.http import AddressPolicy, FetchError, HttpClient, check_url

ALLOWED = ("127.0.0.2/32",)

#: address -> what the refusal must say (None: a public address, permitted)
ADDRESSES = {
    # NAT64, well-known prefix: the last 32 bits
    "64:ff9b::a9fe:a9fe": "NAT64 form of 169.254.169.254",
    "64:ff9b::7f00:1": "NAT64 form of 127.0.0.1",
    "64:ff9b::a00:1": "NAT64 form of 10.0.0.1",
    "64:ff9b::c0a8:101": "NAT64 form of 192.168.1.1",
    "64:ff9b::169.254.169.254": "NAT64 form of 169.254.169.254",
    "64:ff9b::808:808": None,
    # local-use NAT64: refused whatever it embeds
    "64:ff9b:1::a9fe:a9fe": "local-use NAT64 prefix 64:ff9b:1::/48",
    "64:ff9b:1:ffff::808:808": "local-use NAT64 prefix 64:ff9b:1::/48",
    # 6to4: bits 16-47
    "2002:a9fe:a9fe::1": "6to4 form of 169.254.169.254",
    "2002:7f00:1::": "6to4 form of 127.0.0.1",
    "2002:ac10:1:1::1": "6to4 form of 172.16.0.1",
    "2002:808:808::1": None,
    # Teredo: server in bits 32-63, client in the last 32 bits XOR 0xffffffff
    "2001:0:4136:e378:8000:63bf:5601:5601": "Teredo client form of 169.254.169.254",
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "Teredo client form of 127.0.0.1",
    "2001:0:7f00:1:8000:63bf:f7f7:f7f7": "Teredo server form of 127.0.0.1",
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7": None,
    # IPv4-mapped, IPv4-translated (SIIT), IPv4-compatible (deprecated)
    "::ffff:169.254.169.254": "IPv4-mapped form of 169.254.169.254",
    "::ffff:127.0.0.1": "IPv4-mapped form of 127.0.0.1",
    "::ffff:0:a9fe:a9fe": "IPv4-translated form of 169.254.169.254",
    "::ffff:0:7f00:1": "IPv4-translated form of 127.0.0.1",
    "::a9fe:a9fe": "IPv4-compatible form of 169.254.169.254",
    "::127.0.0.1": "IPv4-compatible form of 127.0.0.1",
    "::ffff:8.8.8.8": None,
    # deprecated site-local
    "fec0::1": "deprecated site-local prefix fec0::/10",
    "feff:ffff::1": "deprecated site-local prefix fec0::/10",
    # plain addresses keep their verdicts
    "::1": "",
    "::": "",
    "fe80::1": "",
    "fc00::1": "",
    "2001:db8::1": "",
    "ff02::1": "",
    "169.254.169.254": "",
    "100.64.0.1": "",
    "2606:4700:4700::1111": None,
    "8.8.8.8": None,
}


def _url(address: str) -> str:
    return f"http://[{address}]/" if ":" in address else f"http://{address}/"


@pytest.mark.parametrize(("address", "reason"), ADDRESSES.items())
def test_the_guard_judges_an_embedded_ipv4_address(address, reason):
    """check_url is the guard every hop goes through before connecting (the socket's peer address
    is checked by the same policy)."""
    if reason is None:
        check_url(_url(address), allow_private_networks=False)
        assert AddressPolicy().permits(address)
        return
    with pytest.raises(FetchError) as refused:
        check_url(_url(address), allow_private_networks=False)
    assert "resolves to non-public address" in refused.value.reason
    assert not reason or refused.value.reason.endswith(
        f" ({reason}) (set HARVEST_ALLOW_PRIVATE_NETWORKS=1 to allow)"
    ), refused.value.reason
    assert not AddressPolicy().permits(address)
    assert AddressPolicy(allow_private_networks=True).permits(address)


def test_an_allowed_network_covers_its_addresses_embedded_forms_only():
    policy = AddressPolicy(allowed_networks=("10.1.2.0/24",))
    assert policy.permits("10.1.2.3") and policy.permits("64:ff9b::a01:203")
    assert policy.permits("::ffff:10.1.2.3") and not policy.permits("fe80::1%eth0")
    assert not policy.permits("64:ff9b::a01:303") and not policy.permits("2002:a9fe:a9fe::1")


# --- through real requests ---------------------------------------------------------------------

_tripwire_on = threading.Event()
_stopped: list[str] = []


def _tripwire(event: str, args: tuple) -> None:
    if event != "socket.connect" or not _tripwire_on.is_set():
        return
    address = args[1]
    if not isinstance(address, tuple):
        return
    try:
        loopback = ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        _stopped.append(str(address[0]))
        raise PermissionError(f"test tripwire: connection to {address[0]} refused")


sys.addaudithook(_tripwire)


@contextmanager
def tripwire() -> Iterator[list[str]]:
    _stopped.clear()
    _tripwire_on.set()
    try:
        yield _stopped
    finally:
        _tripwire_on.clear()


#: redirect target host -> the refusal the guard must give
TARGETS = {
    "64:ff9b::7f00:1": "NAT64 form of 127.0.0.1",
    "64:ff9b::a9fe:a9fe": "NAT64 form of 169.254.169.254",
    "2002:7f00:1::1": "6to4 form of 127.0.0.1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "Teredo client form of 127.0.0.1",
    "::ffff:0:7f00:1": "IPv4-translated form of 127.0.0.1",
    "::127.0.0.1": "IPv4-compatible form of 127.0.0.1",
    "::ffff:127.0.0.1": "IPv4-mapped form of 127.0.0.1",
    "fec0::1": "deprecated site-local prefix fec0::/10",
    "64:ff9b:1::a9fe:a9fe": "local-use NAT64 prefix 64:ff9b:1::/48",
}


@pytest.fixture(scope="module")
def site():
    with serve("127.0.0.2") as server:
        port = server.server_address[1]
        server.routes["/page"] = html("<p>reachable through the allow-list</p>")
        for n, host in enumerate(TARGETS):
            server.routes[f"/to/{n}"] = Response(
                status=302, headers={"Location": f"http://[{host}]:{port}/latest/meta-data/"}
            )
        yield server


@pytest.mark.parametrize(("n", "host"), list(enumerate(TARGETS)))
def test_a_redirect_to_an_embedded_private_address_is_refused_before_connecting(site, n, host):
    client = HttpClient("ipv6-guard-test/1.0", allow_private_networks=False, allowed_networks=ALLOWED)
    assert b"allow-list" in client.get(f"{site.base}/page", 10_000).body  # the site itself is reachable
    port = site.server_address[1]
    with tripwire() as stopped, pytest.raises(FetchError) as refused:
        client.get(f"{site.base}/to/{n}", 10_000)
    assert stopped == [], f"the client tried to connect to {stopped}"
    assert refused.value.url == f"http://[{host}]:{port}/latest/meta-data/"
    assert refused.value.reason == (
        f"refused: {host} resolves to non-public address {host} ({TARGETS[host]}) "
        "(set HARVEST_ALLOW_PRIVATE_NETWORKS=1 to allow)"
    )
    assert not refused.value.transient
