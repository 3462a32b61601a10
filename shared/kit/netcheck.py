"""Is a URL's host a public one? Platforms fetch media from these URLs, and webhooks are
POSTed to them, so in production a caller must not point them at private or loopback space.
A webhook's host is also resolved, and only a public address is connected to."""

from __future__ import annotations

import ipaddress
import socket
from typing import Final
from urllib.parse import urlsplit

_LOCAL_NAMES: Final = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
_LOCAL_SUFFIXES: Final = (".localhost", ".local", ".internal", ".lan", ".home.arpa")


def is_public_host(url: str) -> bool:
    """False for loopback, private, link-local, reserved or unspecified addresses, and for
    local names; True otherwise. Names are not resolved here (a name that resolves to private
    space must be refused by the fetcher's own egress rules)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return False
    if not host:
        return False
    host = host.rstrip(".").lower()
    if host in _LOCAL_NAMES or host.endswith(_LOCAL_SUFFIXES):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "." in host  # a dotted public name; bare names resolve only on local networks
    return is_public_address(address)


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Routable on the internet: not loopback, private, link-local, reserved, unspecified
    or multicast (an IPv4-mapped IPv6 address is judged as its IPv4 one)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


class NotPublic(Exception):
    """The host resolves to no address, or to one that is not public."""


def resolve_public(host: str, port: int) -> str:
    """The address to connect to for `host`: its first resolved address, provided every
    address it resolves to is public (a name with one private address among public ones is
    refused: which one a client picks is not ours to control). Connecting to exactly this
    address, not the name again, keeps a second resolution from pointing elsewhere."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise NotPublic(f"{host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not addresses:
        raise NotPublic(f"{host} resolves to no address")
    private = [str(a) for a in addresses if not is_public_address(a)]
    if private:
        raise NotPublic(f"{host} resolves to non-public {', '.join(private)}")
    return str(addresses[0])
