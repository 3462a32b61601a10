"""Is a URL's host a public one? Platforms fetch media from these URLs, so in production a
caller must not point them (or anything that proxies them) at private or loopback space."""

from __future__ import annotations

import ipaddress
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
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast
