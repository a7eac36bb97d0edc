"""The tenant's downstream endpoints: add, rotate the signing secret, enable and disable.

Services run inside the caller's tenant context. A URL is refused when its host is, or resolves
to, a private, loopback or link-local address the provider has not allowed (``core.netguard``).
Signing secrets are envelope-encrypted (``core.crypto``) and returned in clear only once, to the
tenant admin who made them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from uuid import UUID

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from core import crypto, netguard
from core.audit import record_event
from core.tenancy import current_tenant_id
from messaging.events.mappings import EventType
from messaging.events.models import Delivery, DeliveryState
from messaging.events.signing import SecretError, generate_secret, secret_bytes
from tenants.models import DownstreamEndpoint, EndpointSecret


@dataclass(frozen=True)
class IssuedSecret:
    endpoint: DownstreamEndpoint
    secret: str  # shown once


def secret_context(tenant_id: UUID, endpoint_id: int) -> str:
    """Associated data binding an encrypted secret to its tenant and endpoint."""
    return f"tenant:{tenant_id}:downstream_endpoint:{endpoint_id}.secret"


def _check_event_types(event_types: list[str]) -> list[str]:
    chosen = sorted(set(event_types))
    if not chosen:
        raise ValidationError({"event_types": "subscribe to at least one event type"})
    unknown = [t for t in chosen if t not in EventType.ALL and t != "*"]
    if unknown:
        raise ValidationError(
            {
                "event_types": f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EventType.ALL)}"
            }
        )
    return chosen


def check_url(url: str) -> None:
    """Raise ValidationError({"url": ...}) unless the URL may receive deliveries."""
    try:
        netguard.resolve_checked(url)
    except netguard.UnsafeURLError as exc:
        raise ValidationError({"url": str(exc)}) from exc


def _store_secret(endpoint: DownstreamEndpoint, secret: str) -> EndpointSecret:
    assert endpoint.tenant_id is not None
    try:
        secret_bytes(secret)
    except SecretError as exc:
        raise ValidationError({"secret": str(exc)}) from exc
    return EndpointSecret.objects.create(
        endpoint=endpoint,
        secret_encrypted=crypto.encrypt(
            secret.encode(), context=secret_context(endpoint.tenant_id, endpoint.id)
        ),
        hint=secret[6:12],
    )


@transaction.atomic
def create_endpoint(
    *,
    name: str,
    url: str,
    event_types: list[str],
    actor: str,
    secret: str = "",
    events_per_request: int = 1,
) -> IssuedSecret:
    """Register an endpoint with a new signing secret (or the given ``whsec_`` one).

    ``events_per_request`` above 1 makes the endpoint a batch receiver: each signed request
    carries up to that many events (``delivery.batch_body``)."""
    endpoint = DownstreamEndpoint(
        name=name.strip(), url=url.strip(), events_per_request=events_per_request
    )
    endpoint.event_types = _check_event_types(event_types)
    endpoint.full_clean(exclude=["tenant"])
    if DownstreamEndpoint.objects.filter(name=endpoint.name).exists():
        raise ValidationError(
            {"name": f"this tenant already has an endpoint named {endpoint.name!r}"}
        )
    check_url(endpoint.url)
    endpoint.save()
    secret = secret or generate_secret()
    _store_secret(endpoint, secret)
    record_event(
        action="downstream_endpoint.created",
        actor=actor,
        object_type="downstream_endpoint",
        object_id=endpoint.id,
        detail={
            "name": endpoint.name,
            "url": endpoint.url,
            "event_types": endpoint.event_types,
            "events_per_request": endpoint.events_per_request,
        },
    )
    return IssuedSecret(endpoint=endpoint, secret=secret)


@transaction.atomic
def update_endpoint(
    *, endpoint: DownstreamEndpoint, url: str, event_types: list[str], actor: str
) -> DownstreamEndpoint:
    endpoint.url = url.strip()
    endpoint.event_types = _check_event_types(event_types)
    endpoint.full_clean(exclude=["tenant"])
    check_url(endpoint.url)
    endpoint.save(update_fields=["url", "event_types"])
    record_event(
        action="downstream_endpoint.updated",
        actor=actor,
        object_type="downstream_endpoint",
        object_id=endpoint.id,
        detail={"url": endpoint.url, "event_types": endpoint.event_types},
    )
    return endpoint


@transaction.atomic
def rotate_endpoint_secret(
    *, endpoint: DownstreamEndpoint, actor: str, overlap: timedelta | None = None, secret: str = ""
) -> IssuedSecret:
    """Add a new signing secret; the current ones keep signing until ``overlap`` has passed
    (``DOWNSTREAM_SECRET_OVERLAP_SECONDS`` by default), so the receiver can switch at leisure."""
    now = timezone.now()
    overlap = (
        overlap
        if overlap is not None
        else timedelta(seconds=settings.DOWNSTREAM_SECRET_OVERLAP_SECONDS)
    )
    endpoint = DownstreamEndpoint.objects.select_for_update().get(id=endpoint.id)
    EndpointSecret.objects.filter(endpoint=endpoint).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now + overlap)
    ).update(expires_at=now + overlap)
    secret = secret or generate_secret()
    _store_secret(endpoint, secret)
    record_event(
        action="downstream_endpoint.secret_rotated",
        actor=actor,
        category="security",
        object_type="downstream_endpoint",
        object_id=endpoint.id,
        detail={"overlap_seconds": int(overlap.total_seconds())},
    )
    return IssuedSecret(endpoint=endpoint, secret=secret)


@transaction.atomic
def set_endpoint_enabled(
    *, endpoint: DownstreamEndpoint, enabled: bool, actor: str
) -> DownstreamEndpoint:
    """Enable or disable an endpoint. Disabling cancels what it is still owed (the events stay in
    the feed for the pull API); enabling starts with the events that come after."""
    endpoint.enabled = enabled
    endpoint.disabled_at = None if enabled else timezone.now()
    if enabled:
        # A fresh start: the circuit's memory belongs to the deliveries that were cancelled.
        endpoint.circuit_state = "closed"
        endpoint.consecutive_failures = 0
    endpoint.save(update_fields=["enabled", "disabled_at", "circuit_state", "consecutive_failures"])
    cancelled = 0
    if not enabled:
        cancelled = Delivery.objects.filter(endpoint=endpoint, state=DeliveryState.PENDING).update(
            state=DeliveryState.CANCELLED, lease_until=None, last_error="endpoint disabled"
        )
    record_event(
        action="downstream_endpoint.enabled" if enabled else "downstream_endpoint.disabled",
        actor=actor,
        object_type="downstream_endpoint",
        object_id=endpoint.id,
        detail={"cancelled_deliveries": cancelled},
    )
    return endpoint


def signing_secrets(*, endpoint_id: int, at: object = None) -> list[str]:
    """The secrets that sign a delivery to the endpoint now: unexpired, newest first."""
    now = at or timezone.now()
    tenant = current_tenant_id()
    rows = (
        EndpointSecret.objects.filter(endpoint_id=endpoint_id)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-created_at", "-id")
    )
    return [
        crypto.decrypt(row.secret_encrypted, context=secret_context(tenant, endpoint_id)).decode()
        for row in rows
    ]


def get_endpoint(*, endpoint_id: int | str) -> DownstreamEndpoint:
    """One endpoint of the current tenant; another tenant's and a missing one are both 404."""
    try:
        return DownstreamEndpoint.objects.get(id=endpoint_id)
    except (DownstreamEndpoint.DoesNotExist, ValueError) as exc:
        raise Http404("No such endpoint") from exc
