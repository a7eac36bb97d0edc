"""A circuit breaker per connection, kept in the database so every worker sees one state.

Closed: requests go out. After ``THRESHOLD`` consecutive failures that say the DIP is unwell
(408/429/5xx, no answer) it opens: nothing is sent to that connection until ``probe_at`` (at least
``COOLDOWN``, longer when the DIP asked with Retry-After); submissions keep being accepted and wait
in the outbox. At ``probe_at`` one worker wins the right to send one probe batch (half-open): an
answer closes the breaker and the backlog drains, oldest first; another failure opens it again.
Moves are conditional updates, so two workers never both probe.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.db.models import F

from messaging.models import BreakerState, ConnectionBreaker
from messaging.outbound import clock

logger = logging.getLogger(__name__)

THRESHOLD = 5
COOLDOWN = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Permit:
    """May this worker send to the connection now? ``probe`` limits it to one small batch;
    ``wait_until`` says when to look again when it may not."""

    send: bool
    probe: bool = False
    wait_until: dt.datetime | None = None


def _row(connection_id: int, now: dt.datetime) -> ConnectionBreaker:
    row, _ = ConnectionBreaker.objects.get_or_create(
        connection_id=connection_id, defaults={"updated_at": now}
    )
    return row


def permit(*, connection_id: int, now: dt.datetime | None = None) -> Permit:
    now = now or clock.now()
    row = _row(connection_id, now)
    if row.state == BreakerState.CLOSED:
        return Permit(send=True)
    if row.probe_at is not None and now < row.probe_at:
        return Permit(send=False, wait_until=row.probe_at)
    # Probe time: one worker takes the probe (conditional), the others wait for its outcome.
    won = ConnectionBreaker.objects.filter(
        id=row.id, state=row.state, probe_at=row.probe_at
    ).update(state=BreakerState.HALF_OPEN, probe_at=now + COOLDOWN, updated_at=now)
    if won:
        logger.info("outbound.breaker_probe", extra={"connection_id": connection_id})
        return Permit(send=True, probe=True)
    return Permit(send=False, wait_until=now + COOLDOWN)


def record_success(*, connection_id: int, now: dt.datetime | None = None) -> bool:
    """The DIP answered: close the breaker. Returns True when it was open or half-open."""
    now = now or clock.now()
    was_open = ConnectionBreaker.objects.filter(
        connection_id=connection_id, state__in=[BreakerState.OPEN, BreakerState.HALF_OPEN]
    ).exists()
    closed = (
        ConnectionBreaker.objects.filter(connection_id=connection_id)
        .exclude(state=BreakerState.CLOSED, consecutive_failures=0)
        .update(
            state=BreakerState.CLOSED,
            consecutive_failures=0,
            opened_at=None,
            probe_at=None,
            last_error="",
            updated_at=now,
        )
    )
    if closed and was_open:
        logger.info("outbound.breaker_closed", extra={"connection_id": connection_id})
    return bool(closed and was_open)


def record_failure(
    *,
    connection_id: int,
    error: str,
    retry_after: float | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Count a failure; return True when the breaker is (now) open."""
    now = now or clock.now()
    row = _row(connection_id, now)
    ConnectionBreaker.objects.filter(id=row.id).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=error[:500], updated_at=now
    )
    row.refresh_from_db()
    if row.state == BreakerState.HALF_OPEN or (
        row.state == BreakerState.CLOSED and row.consecutive_failures >= THRESHOLD
    ):
        wait = max(COOLDOWN, dt.timedelta(seconds=retry_after or 0))
        ConnectionBreaker.objects.filter(id=row.id).update(
            state=BreakerState.OPEN,
            opened_at=row.opened_at or now,
            probe_at=now + wait,
            updated_at=now,
        )
        logger.warning(
            "outbound.breaker_open",
            extra={"connection_id": connection_id, "failures": row.consecutive_failures},
        )
        return True
    return row.state == BreakerState.OPEN


def get_breaker(*, connection_id: int) -> ConnectionBreaker | None:
    return ConnectionBreaker.objects.filter(connection_id=connection_id).first()
