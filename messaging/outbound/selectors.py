"""Reading outbound messages: one message with its state, attempts (the DIP exchanges that carried
it) and timeline; the tenant's outbound list. Another tenant's message is a 404 like a missing one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Q, Sum
from django.http import Http404

from messaging.models import ConnectionBreaker, DipExchange, Message, StateCount, Transition
from messaging.outbound import clock
from messaging.store import selectors as store_selectors
from messaging.store.states import OutboundState


@dataclass(frozen=True)
class OutboundDetail:
    message: Message
    timeline: list[Transition]
    exchanges: list[DipExchange]


def get_outbound_message(*, message_id: int) -> Message:
    message = store_selectors.get_message(message_id=message_id)
    if message is None or message.direction != "outbound":
        raise Http404("No such message")
    return message


def get_outbound_detail(*, message_id: int) -> OutboundDetail:
    """The message, its timeline and every request that carried it (oldest first)."""
    message = get_outbound_message(message_id=message_id)
    match = Q(pk__in=[])
    if message.sender_unique_reference:
        match |= Q(sender_references__contains=[message.sender_unique_reference])
    if message.transaction_id:
        match |= Q(transaction_ids__contains=[message.transaction_id])
    exchanges = list(DipExchange.objects.filter(match).order_by("started_at", "id"))
    return OutboundDetail(
        message=message,
        timeline=store_selectors.list_timeline(message_id=message.id),
        exchanges=exchanges,
    )


def list_outbound_messages(*, state: str | None = None, limit: int = 100) -> list[Message]:
    """The tenant's newest outbound messages, optionally in one state."""
    query = Message.objects.filter(direction="outbound")
    if state:
        query = query.filter(state=state)
    return list(query.order_by("-id")[:limit])


OUTBOX_STATES = (OutboundState.ACCEPTED, OutboundState.READY, OutboundState.SENDING)


@dataclass(frozen=True)
class OutboxStatus:
    """One connection's outbox as the tenant watches it: how many messages wait (by state), its
    circuit, and the drain after an outage (the backlog it found, how many moved on since)."""

    connection_id: int
    waiting: dict[str, int]
    circuit: str
    drain_started_at: dt.datetime | None
    drain_finished_at: dt.datetime | None
    drain_backlog: int
    drain_done: int

    @property
    def depth(self) -> int:
        return sum(self.waiting.values())

    @property
    def draining(self) -> bool:
        return self.drain_started_at is not None and self.drain_finished_at is None

    @property
    def drain_percent(self) -> int:
        if not self.drain_backlog:
            return 0
        return min(100, round(100 * self.drain_done / self.drain_backlog))

    @property
    def drain_rate(self) -> float | None:
        """Messages per second since the drain started (until it finished)."""
        if self.drain_started_at is None:
            return None
        end = self.drain_finished_at or clock.now()
        seconds = (end - self.drain_started_at).total_seconds()
        return round(self.drain_done / seconds, 1) if seconds > 0 else None


def list_outbox_status() -> list[OutboxStatus]:
    """Every connection with outbound traffic or a breaker row, from the store's counters (no
    message is counted) and the breaker rows. Call inside the tenant's context."""
    waiting: dict[int, dict[str, int]] = {}
    for row in (
        StateCount.objects.filter(direction="outbound", state__in=list(OUTBOX_STATES))
        .values("connection_id", "state")
        .annotate(total=Sum("count"))
    ):
        waiting.setdefault(row["connection_id"], {})[row["state"]] = int(row["total"] or 0)
    breakers = {b.connection_id: b for b in ConnectionBreaker.objects.all()}
    found = []
    for connection_id in sorted(set(waiting) | set(breakers)):
        b = breakers.get(connection_id)
        found.append(
            OutboxStatus(
                connection_id=connection_id,
                waiting={
                    s.value: waiting.get(connection_id, {}).get(s.value, 0) for s in OUTBOX_STATES
                },
                circuit=b.state if b else "closed",
                drain_started_at=b.drain_started_at if b else None,
                drain_finished_at=b.drain_finished_at if b else None,
                drain_backlog=b.drain_backlog if b else 0,
                drain_done=b.drain_done if b else 0,
            )
        )
    return found
