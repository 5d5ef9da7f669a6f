"""The private-network guard: which addresses a fetch may reach, checked on the resolved addresses
before connecting and on the peer of every new socket (so DNS rebinding is refused too).

An IPv6 address that embeds an IPv4 address (NAT64, 6to4, Teredo, mapped, compatible) is judged by
the IPv4 address it stands for.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.connection import HTTPConnection

from harvest.web.bounded_cache import remember
from harvest.web.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: IPv4 in the last 32 bits


_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 2765)


_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


#: IPv6 networks refused outright: the local-use NAT64 prefix (RFC 8215; where its IPv4 sits depends
#: on the operator's prefix length) and deprecated site-local addresses, which some stacks still route
_REFUSED_V6 = {
    ipaddress.ip_network("64:ff9b:1::/48"): "local-use NAT64 prefix 64:ff9b:1::/48",
    ipaddress.ip_network("fec0::/10"): "deprecated site-local prefix fec0::/10",
}


def _ip(address: str) -> IPAddress:
    return ipaddress.ip_address(address.split("%")[0])


def embedded_ipv4(ip: IPAddress) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address stands for, each with the name of its form: traffic to
    NAT64, 6to4, Teredo, mapped or compatible addresses reaches those IPv4 hosts, so the guard
    judges the IPv4 address, not the IPv6 wrapper."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    if ip.ipv4_mapped is not None:
        return [("IPv4-mapped", ip.ipv4_mapped)]
    if ip.sixtofour is not None:
        return [("6to4", ip.sixtofour)]
    if ip.teredo is not None:
        server, client = ip.teredo  # the client is stored XOR 0xffffffff; ipaddress undoes it
        return [("Teredo client", client), ("Teredo server", server)]
    low32 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _NAT64:
        return [("NAT64", low32)]
    if ip in _IPV4_TRANSLATED:
        return [("IPv4-translated", low32)]
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are the unspecified and loopback addresses
        return [("IPv4-compatible", low32)]
    return []


def _is_public(address: str) -> bool:
    """Globally reachable, and so is every IPv4 address it embeds."""
    return _non_public_reason(_ip(address), ()) is None


def _non_public_reason(ip: IPAddress, allowed: tuple[str, ...]) -> str | None:
    """None if ``ip`` may be contacted: public, or inside one of the ``allowed`` networks; else why not
    ("" for a plain private, loopback, link-local, reserved... address)."""
    if any(ip in ipaddress.ip_network(net, strict=False) for net in allowed):
        return None
    embedded = embedded_ipv4(ip)
    if embedded:
        for kind, ipv4 in embedded:
            if _non_public_reason(ipv4, allowed) is not None:
                return f"{kind} form of {ipv4}"
        return None
    for network, reason in _REFUSED_V6.items():
        if ip.version == network.version and ip in network:
            return reason
    # is_global excludes private, loopback, link-local, shared (100.64/10), reserved and unspecified
    if ip.is_global and not ip.is_multicast:
        return None
    return ""


@dataclass(frozen=True)
class AddressPolicy:
    """Which peer addresses may be contacted: public ones, plus explicitly allowed networks. An IPv6
    address that embeds an IPv4 address (NAT64, 6to4, Teredo, mapped) is judged by that address."""

    allow_private_networks: bool = False
    allowed_networks: tuple[str, ...] = ()

    def refusal(self, address: str) -> str | None:
        """None if ``address`` may be contacted, else what it is ("non-public address X (...)")."""
        if self.allow_private_networks or _is_public(address):
            return None
        reason = _non_public_reason(_ip(address), self.allowed_networks)
        if reason is None:
            return None
        return f"non-public address {address}" + (f" ({reason})" if reason else "")

    def permits(self, address: str) -> bool:
        return self.refusal(address) is None


class AddressRefused(Exception):
    """Raised inside a connection when the socket's peer is not a permitted address."""


def refusal_message(host: str, what: str, connected: bool) -> str:
    verb = "connected to" if connected else "resolves to"
    return f"refused: {host} {verb} {what} (set HARVEST_ALLOW_PRIVATE_NETWORKS=1 to allow)"


def checked_socket(conn: HTTPConnection, sock: socket.socket, policy: AddressPolicy) -> socket.socket:
    address = str(sock.getpeername()[0])
    refusal = policy.refusal(address)
    if refusal is not None:
        sock.close()
        raise AddressRefused(refusal_message(conn.host, refusal, connected=True))
    return sock


def find_refusal(exc: BaseException) -> AddressRefused | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, AddressRefused):
            return current
        stack.extend([current.__cause__, current.__context__, getattr(current, "reason", None)])
        stack.extend(arg for arg in getattr(current, "args", ()) if isinstance(arg, BaseException))
    return None


#: How long a client trusts its own resolution of a host for the pre-connect check. The connection
#: resolves the name again and its peer address is checked whatever this said (DNS rebinding), so
#: the cache only spares the resolver a second question per request; failures are never cached.
RESOLVE_TTL = 60.0


def check_url(
    url: str,
    allow_private_networks: bool,
    allowed_networks: tuple[str, ...] = (),
    resolved: dict[tuple[str, int], tuple[float, tuple[str, ...]]] | None = None,
) -> None:
    """Refuse non-http(s) URLs and, unless allowed, hosts that resolve to non-public addresses.
    ``resolved`` is a client's cache of recent resolutions (see RESOLVE_TTL)."""
    policy = AddressPolicy(allow_private_networks, allowed_networks)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(url, f"unsupported scheme {parts.scheme!r}")
    host = parts.hostname
    if not host:
        raise FetchError(url, "no host in URL")
    if allow_private_networks:
        return
    for address in resolved_addresses(url, host, parts.port or 80, resolved):
        refusal = policy.refusal(address)
        if refusal is not None:
            raise FetchError(url, refusal_message(host, refusal, connected=False))


def resolved_addresses(
    url: str, host: str, port: int, cache: dict[tuple[str, int], tuple[float, tuple[str, ...]]] | None
) -> tuple[str, ...]:
    now = time.monotonic()
    if cache is not None:
        hit = cache.get((host, port))
        if hit is not None and now - hit[0] < RESOLVE_TTL:
            return hit[1]
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise FetchError(url, f"cannot resolve host {host!r}: {exc.strerror}", transient=True) from exc
    addresses = tuple(str(info[4][0]) for info in infos)
    if cache is not None:
        remember(cache, (host, port), (now, addresses))
    return addresses
