"""Reading events: the cursor-ordered feed, one event, and endpoints' delivery health."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.core import signing
from django.db.models import Count, Q
from django.http import Http404
from django.utils import timezone

from core.tenancy import current_tenant_id
from messaging.events.models import DeliveryAttempt, Event
from tenants.models import DownstreamEndpoint

CURSOR_SALT = "busbar.events.cursor"


class CursorError(ValueError):
    """The cursor is not one this tenant's feed handed out."""


def event_envelope(event: Event) -> dict[str, Any]:
    """What a consumer receives for an event, by webhook or from the pull API."""
    return {
        "id": event.webhook_id,
        "type": event.type,
        "timestamp": event.created_at.isoformat(),
        "subject": event.subject,
        "mapping": f"{event.mapping}@{event.mapping_version}" if event.mapping else None,
        "source_message_id": event.source_message_id,
        "source": event.source or None,
        "supersedes": (
            f"evt_{event.supersedes.uid.hex}" if event.supersedes_id and event.supersedes else None
        ),
        "data": event.payload,
    }


def _signer() -> signing.Signer:
    # The tenant is in the salt: another tenant's cursor (or an edited one) is refused rather
    # than silently read from somewhere else in this tenant's feed.
    return signing.Signer(salt=f"{CURSOR_SALT}:{current_tenant_id()}")


def encode_cursor(position: int) -> str:
    """An opaque cursor for a position in the current tenant's feed."""
    raw = _signer().sign(str(position))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        return int(_signer().unsign(raw))
    except (ValueError, signing.BadSignature, UnicodeDecodeError) as exc:
        raise CursorError("this cursor was not issued by this tenant's event feed") from exc


@dataclass(frozen=True)
class FeedPage:
    events: list[Event]
    next_cursor: str | None
    has_more: bool


def list_events_after(
    *, cursor: str | None, limit: int = 100, types: list[str] | None = None
) -> FeedPage:
    """The tenant's events after ``cursor`` (from the start without one), oldest first.

    Positions become visible in order (``services._insert``), so the returned cursor is safe to
    keep: it is where the next call continues, the same cursor always gives the same events, and
    a client acknowledges by keeping it. With ``types`` the page skips other types, and the
    cursor still moves past them.
    """
    events = Event.objects.select_related("supersedes")
    if cursor:
        events = events.filter(position__gt=decode_cursor(cursor))
    page = list(events.order_by("position")[: limit + 1])
    has_more = len(page) > limit
    page = page[:limit]
    next_cursor = encode_cursor(page[-1].position) if page else cursor
    if types:
        page = [e for e in page if e.type in types]
    return FeedPage(events=page, next_cursor=next_cursor, has_more=has_more)


def get_event(*, webhook_id: str) -> Event:
    """One event of the current tenant by its id (``evt_<hex>``); others' and missing are 404."""
    try:
        uid = UUID(hex=webhook_id.removeprefix("evt_"))
        return Event.objects.select_related("supersedes").get(uid=uid)
    except (Event.DoesNotExist, ValueError) as exc:
        raise Http404("No such event") from exc


def list_event_deliveries(*, event: Event) -> list[dict[str, Any]]:
    """Where the event went: per endpoint its state, attempts and last answer (the lineage's
    "consumer -> outcome" step)."""
    return [
        {
            "endpoint": d.endpoint.name,
            "state": d.state,
            "attempts": d.attempts,
            "delivered_at": d.delivered_at,
            "last_status": d.last_status,
            "last_error": d.last_error,
        }
        for d in event.deliveries.select_related("endpoint").order_by("endpoint__name")
    ]


@dataclass(frozen=True)
class EndpointHealth:
    endpoint: DownstreamEndpoint
    attempts: int
    succeeded: int
    pending: int
    parked: int

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.attempts if self.attempts else None


def list_endpoint_health(*, window: timedelta = timedelta(hours=24)) -> list[EndpointHealth]:
    """Each endpoint with its attempts and successes over the window and its backlog."""
    since = timezone.now() - window
    endpoints = list(
        DownstreamEndpoint.objects.annotate(
            pending=Count("deliveries", filter=Q(deliveries__state="pending")),
            parked=Count("deliveries", filter=Q(deliveries__state="parked")),
        ).order_by("name")
    )
    stats: dict[int, tuple[int, int]] = {
        row["endpoint_id"]: (row["attempts"], row["succeeded"])
        for row in DeliveryAttempt.objects.filter(started_at__gte=since)
        .values("endpoint_id")
        .annotate(attempts=Count("id"), succeeded=Count("id", filter=Q(ok=True)))
    }
    return [
        EndpointHealth(
            endpoint=e,
            attempts=stats.get(e.id, (0, 0))[0],
            succeeded=stats.get(e.id, (0, 0))[1],
            pending=e.pending,
            parked=e.parked,
        )
        for e in endpoints
    ]
