"""Refusing outgoing requests to private networks (server-side request forgery).

Busbar posts to URLs its tenants give it. A URL whose host is, or resolves to, a loopback,
private, link-local, multicast or otherwise non-public address could reach Busbar's own services
or the cloud metadata endpoint, so such URLs are refused unless the provider allows the exact
address and port (or a network) in ``BUSBAR_DOWNSTREAM_ALLOW``. Every address a name resolves to
is checked, not only the first; and the check runs again just before each request, which then goes
to an address that passed (``resolve_checked``), so a name re-pointed after the check (DNS
rebinding) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeURLError(ValueError):
    """The URL may not be used for outgoing requests; the message says why."""


@dataclass(frozen=True)
class AllowEntry:
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    port: int | None

    def admits(self, address: Address, port: int) -> bool:
        return address in self.network and (self.port is None or self.port == port)


def parse_allow_list(spec: str) -> list[AllowEntry]:
    """``"127.0.0.1:8701,[::1]:8701,10.20.0.0/16"``: an address with a port, or a network (any
    port). Raises ValueError naming a malformed entry."""
    entries = []
    for raw in filter(None, (part.strip() for part in spec.split(","))):
        try:
            if "/" in raw:
                entries.append(AllowEntry(ipaddress.ip_network(raw, strict=False), None))
                continue
            parts = urlsplit("//" + raw)
            if parts.hostname is None:
                raise ValueError(raw)
            address = ipaddress.ip_address(parts.hostname)
            entries.append(AllowEntry(ipaddress.ip_network(address), parts.port))
        except ValueError as exc:
            raise ValueError(
                f"BUSBAR_DOWNSTREAM_ALLOW entry {raw!r} is neither address:port nor a network"
            ) from exc
    return entries


def _allowed() -> list[AllowEntry]:
    from django.conf import settings

    return parse_allow_list(getattr(settings, "BUSBAR_DOWNSTREAM_ALLOW", "") or "")


def _resolve(host: str, port: int) -> list[Address]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeURLError(f"the host {host!r} does not resolve: {exc}") from exc
    found: list[Address] = []
    for info in infos:
        # Strip an IPv6 zone ("fe80::1%eth0") before parsing.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise UnsafeURLError(f"the host {host!r} has no addresses")
    return found


def _is_public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _is_public(address.ipv4_mapped)
    return address.is_global and not address.is_multicast


def resolve_checked(url: str, *, allow: list[AllowEntry] | None = None) -> list[Address]:
    """Every address the URL's host resolves to, each public or allowed; raises UnsafeURLError.

    Only ``http`` and ``https`` URLs without credentials in them are accepted.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"}:
        raise UnsafeURLError("the URL must start with https:// (or http://)")
    if parts.username or parts.password:
        raise UnsafeURLError("the URL must not carry a user name or password")
    host = parts.hostname
    if not host:
        raise UnsafeURLError("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise UnsafeURLError(f"the URL's port is not a number: {exc}") from exc
    entries = _allowed() if allow is None else allow
    addresses = _resolve(host, port)
    for address in addresses:
        if _is_public(address) or any(entry.admits(address, port) for entry in entries):
            continue
        raise UnsafeURLError(
            f"{host} resolves to {address}, a private, loopback or link-local address; "
            "the provider must allow it (BUSBAR_DOWNSTREAM_ALLOW) before Busbar will post there"
        )
    return addresses
