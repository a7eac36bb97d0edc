"""The outbound worker's clock for its own decisions (breaker probe times, the retry budget).

Messages are signed and stamped with the real time, which the DIP checks; only the decisions read
this, so a test can run a six-hour outage in seconds against a real DIP simulator whose clock is
the real one (moving every clock in the process would make every signature look six hours early).
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

_offset = dt.timedelta(0)
_frozen: dt.datetime | None = None


def now() -> dt.datetime:
    if _frozen is not None:
        return _frozen + _offset
    return timezone.now() + _offset


def freeze() -> None:
    """Stop the decision clock where it is: only :func:`advance` moves it (a rate-limit test
    must not see the real seconds its own requests take)."""
    global _frozen
    _frozen = timezone.now()


def advance(delta: dt.timedelta) -> None:
    """Move the decision clock forward (tests and drills only)."""
    global _offset
    _offset += delta


def reset() -> None:
    global _offset, _frozen
    _offset = dt.timedelta(0)
    _frozen = None
