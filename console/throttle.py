"""Sign-in throttling that slows the guilty, not everyone.

Failures are counted in three places, each over a short window (``LOGIN_THROTTLE_WINDOW_SECONDS``):
- per (address, username): that pair is refused after ``LOGIN_THROTTLE_ATTEMPTS`` failures, so a
  guesser is stopped while the same person at another address, or others at this address, are not;
- per address: an address that fails ``LOGIN_THROTTLE_ADDRESS_ATTEMPTS`` times over any names is
  refused (password spraying from one place);
- per username: once a name has failed ``LOGIN_THROTTLE_USERNAME_ATTEMPTS`` times from anywhere
  (a distributed attack), an address that has already failed for that name gets no further try,
  while an address with no failure for it (the real person, usually) still signs in.
No count is kept forever and no account is ever locked outright: the worst an attacker can do to
someone else is nothing. The address is the client's (core.clientaddr), not the proxy's.
"""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

from core.clientaddr import client_address


def _name(username: str) -> str:
    # Hashed so a cache key never carries what someone typed (it may be a password).
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


def _keys(request: HttpRequest, username: str) -> tuple[str, str, str]:
    address = client_address(request) or "unknown"
    name = _name(username)
    return (
        f"login-fail:pair:{address}:{name}",
        f"login-fail:addr:{address}",
        f"login-fail:user:{name}",
    )


def is_throttled(request: HttpRequest, username: str) -> bool:
    """Whether this address may not try this username now."""
    pair_key, address_key, user_key = _keys(request, username)
    counts = cache.get_many([pair_key, address_key, user_key])
    pair = counts.get(pair_key, 0)
    return (
        pair >= settings.LOGIN_THROTTLE_ATTEMPTS
        or counts.get(address_key, 0) >= settings.LOGIN_THROTTLE_ADDRESS_ATTEMPTS
        or (counts.get(user_key, 0) >= settings.LOGIN_THROTTLE_USERNAME_ATTEMPTS and pair > 0)
    )


def count_failure(request: HttpRequest, username: str) -> None:
    """Count one failed password or second-factor code against the address and the name."""
    for key in _keys(request, username):
        # add() starts the window; incr() keeps its expiry, so the window is fixed, not sliding.
        cache.add(key, 0, timeout=settings.LOGIN_THROTTLE_WINDOW_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=settings.LOGIN_THROTTLE_WINDOW_SECONDS)
