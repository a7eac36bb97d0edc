"""The client's address, taken from a proxy's ``X-Forwarded-For`` only when a trusted proxy sent it.

Behind nginx every connection comes from the proxy, so ``REMOTE_ADDR`` alone would give every
client one address: one throttle for everybody and useless audit addresses. The header is a
client-supplied list, though, so it is believed only when the connection itself comes from a
configured trusted proxy (``BUSBAR_TRUSTED_PROXIES``, CIDRs), and then only its rightmost hop
that is not itself a trusted proxy: everything left of that was written by the client.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Any

from django.conf import settings

type Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=8)
def _networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


def _parse(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def client_address(request: Any) -> str | None:
    """The address of the client behind any trusted proxies, or ``REMOTE_ADDR`` when the
    connection did not come from one (then ``X-Forwarded-For`` is ignored: anyone can send it)."""
    if request is None:
        return None
    remote = request.META.get("REMOTE_ADDR") or None
    trusted = _networks(tuple(settings.TRUSTED_PROXIES))
    peer = _parse(remote or "")
    if peer is None or not any(peer in net for net in trusted):
        return remote
    hops = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            # A hop that is not an address was not written by a proxy of ours: stop believing
            # the header here and blame the last proxy that handed it on.
            return str(peer)
        if not any(address in net for net in trusted):
            return str(address)
        peer = address
    return str(peer)
