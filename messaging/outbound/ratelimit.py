"""The send rate limit of one connection: a token bucket kept on the connection's breaker row, so
every worker draws from the same one (``BUSBAR_OUTBOUND_RATE_PER_SECOND``, one second of burst).

Normal sending and the drain after an outage both take their messages from it. Time is the
outbound worker's clock (:mod:`messaging.outbound.clock`), so tests move it instead of waiting.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from messaging.models import ConnectionBreaker
from messaging.outbound import clock


@dataclass(frozen=True)
class Grant:
    """``granted`` of the messages asked for may go now; the rest in ``wait_seconds``."""

    granted: int
    wait_seconds: float = 0.0


def configured_rate() -> float:
    return float(settings.BUSBAR_OUTBOUND_RATE_PER_SECOND)


@transaction.atomic
def take(
    *, connection_id: int, wanted: int, rate: float | None = None, now: dt.datetime | None = None
) -> Grant:
    """Take up to ``wanted`` tokens for the connection. Call inside the tenant's context."""
    rate = configured_rate() if rate is None else rate
    if wanted <= 0 or rate <= 0:
        return Grant(granted=max(wanted, 0))
    now = now or clock.now()
    burst = max(1.0, rate)
    row, _ = ConnectionBreaker.objects.select_for_update().get_or_create(
        connection_id=connection_id, defaults={"updated_at": now}
    )
    last = row.rate_refilled_at
    if last is None or last > now:  # a fresh bucket, or a clock moved back (a reset drill)
        tokens = burst
    else:
        tokens = min(burst, row.rate_tokens + (now - last).total_seconds() * rate)
    granted = min(wanted, math.floor(tokens))
    tokens -= granted
    ConnectionBreaker.objects.filter(id=row.id).update(rate_tokens=tokens, rate_refilled_at=now)
    # The rest may go once the bucket holds them (a second's worth at most): one wait, not a
    # trickle of one-message requests.
    remaining = wanted - granted
    wait = 0.0 if remaining == 0 else (min(float(remaining), burst) - tokens) / rate
    return Grant(granted=granted, wait_seconds=max(wait, 0.0))
