"""Telling the DIP where to push: one callback URL per connection and inbound channel
(``pubconfig``) and one for the connection's status messages (``/statusmessage/config``).

Every call is signed, crosses mutual TLS with the connection's active certificates and leaves a
``DipExchange`` as evidence. The DIP is never called inside a web request: the console asks for a
registration (:func:`request_webhook_registration`) and a worker does it.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from core.audit import record_event
from messaging.credentials import dip_client_for, trust_anchor_pem
from messaging.dip import DipTransportError
from messaging.exchanges import record_call, record_failure
from messaging.models import DipExchange, ExchangeOperation
from tenants import certificates
from tenants.certificates import CertificateError
from tenants.models import Channel, ChannelStatus, Connection, Direction

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/dip/webhooks/"
STATUS_PATH = "/dip/webhooks/status/"
_STATUS_SALT = "busbar.inbound.status-webhook"


class RegistrationError(Exception):
    """The webhooks cannot be registered as configured (no base URL, no credentials)."""


@dataclass(frozen=True)
class RegistrationOutcome:
    """What the DIP answered for one callback: ``target`` is an interface id or ``status``."""

    target: str
    url: str
    ok: bool
    status: int | None
    detail: str


def webhook_base_url() -> str:
    """The public ``https://host:port`` the DIP reaches Busbar's webhooks on (nginx's :8443 in
    production, the ingest server in development); raises RegistrationError when unset."""
    base = (getattr(settings, "BUSBAR_WEBHOOK_BASE_URL", "") or "").rstrip("/")
    if not base.lower().startswith("https://"):
        raise RegistrationError(
            "BUSBAR_WEBHOOK_BASE_URL must be the https:// address the DIP pushes to"
        )
    return base


def channel_webhook_url(*, channel: Channel) -> str:
    """The callback URL registered for an inbound channel (its unguessable token in the path)."""
    return f"{webhook_base_url()}{WEBHOOK_PATH}{channel.webhook_token}"


def status_webhook_token(*, tenant_id: UUID | str, connection_id: int) -> str:
    """The path that names a connection's status webhook: tenant, connection and a MAC over
    both under the server's secret, so the ingest path knows the tenant without a lookup and
    nobody can forge a path for another connection."""
    mac = salted_hmac(_STATUS_SALT, f"{tenant_id}:{connection_id}", algorithm="sha256").hexdigest()[
        :32
    ]
    return f"{tenant_id}/{connection_id}/{mac}"


def resolve_status_token(token: str) -> tuple[str, int] | None:
    """The (tenant id, connection id) a status-webhook path names, or None if it is forged."""
    parts = token.strip("/").split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    try:
        tenant_id = str(UUID(parts[0]))
    except ValueError:
        return None
    expected = status_webhook_token(tenant_id=tenant_id, connection_id=int(parts[1]))
    if not hmac.compare_digest(expected.encode(), token.strip("/").encode()):
        return None
    return tenant_id, int(parts[1])


def status_webhook_url(*, connection: Connection) -> str:
    token = status_webhook_token(tenant_id=str(connection.tenant_id), connection_id=connection.pk)
    return f"{webhook_base_url()}{STATUS_PATH}{token}"


def inbound_channels(*, connection: Connection) -> list[Channel]:
    return list(
        Channel.objects.filter(connection=connection, direction=Direction.INBOUND)
        .exclude(status=ChannelStatus.DISABLED)
        .order_by("interface_id")
    )


def register_webhooks(*, connection: Connection, actor: str) -> list[RegistrationOutcome]:
    """Register every inbound channel's callback and the status callback of ``connection`` with
    the DIP; return what the DIP said to each. Each call is recorded (``DipExchange``) and the
    whole run is one audit event. Raises RegistrationError (no base URL) or CertificateError
    (no active signing/mTLS certificate or trust anchor) before any call is made."""
    base = webhook_base_url()
    recipient = connection.identity.dip_id
    targets = [
        (c.interface_id, channel_webhook_url(channel=c))
        for c in inbound_channels(connection=connection)
    ]
    targets.append(("status", status_webhook_url(connection=connection)))
    outcomes: list[RegistrationOutcome] = []
    with dip_client_for(connection=connection) as client:
        for target, url in targets:
            started_at = timezone.now()
            interface_id = "" if target == "status" else target
            try:
                if target == "status":
                    response = client.register_status_webhook(recipient, url)
                else:
                    response = client.register_webhook(target, recipient, url)
            except DipTransportError as exc:
                record_failure(
                    connection=connection,
                    operation=ExchangeOperation.WEBHOOK,
                    error=exc,
                    started_at=started_at,
                    interface_id=interface_id,
                )
                outcomes.append(RegistrationOutcome(target, url, False, None, exc.reason[:300]))
                continue
            record_call(
                connection=connection,
                operation=ExchangeOperation.WEBHOOK,
                response=response,
                started_at=started_at,
                interface_id=interface_id,
            )
            detail = "" if response.ok else response.response_body[:300].decode(errors="replace")
            outcomes.append(
                RegistrationOutcome(target, url, response.ok, response.status, detail or "ok")
            )
    record_event(
        action="webhooks.registered"
        if all(o.ok for o in outcomes)
        else "webhooks.registration_failed",
        actor=actor,
        object_type="connection",
        object_id=connection.pk,
        detail={
            "base_url": base,
            "results": [
                {"target": o.target, "ok": o.ok, "status": o.status, "detail": o.detail}
                for o in outcomes
            ],
        },
    )
    logger.info(
        "webhooks.registered",
        extra={
            "connection_id": connection.pk,
            "ok": sum(o.ok for o in outcomes),
            "of": len(outcomes),
        },
    )
    return outcomes


def check_registration_possible(*, connection: Connection) -> None:
    """Raise RegistrationError or CertificateError now, in the request, for what a worker would
    only discover later: no webhook base URL, or an incomplete credential set."""
    webhook_base_url()
    for purpose in ("signing", "mtls"):
        if certificates.active_certificate(connection=connection, purpose=purpose) is None:
            raise CertificateError(
                f"connection {connection} has no active {purpose} certificate: import and "
                "activate one before registering webhooks"
            )
    trust_anchor_pem(connection=connection)


def request_webhook_registration(*, connection: Connection, actor: str) -> None:
    """Ask a worker to register ``connection``'s webhooks with the DIP (after this transaction
    commits). Raises at once when it cannot work (see :func:`check_registration_possible`)."""
    from messaging.inbound.tasks import register_webhooks_task  # the tasks import this module

    check_registration_possible(connection=connection)
    with transaction.atomic():
        record_event(
            action="webhooks.registration_requested",
            actor=actor,
            object_type="connection",
            object_id=connection.pk,
        )
        register_webhooks_task.delay_on_commit(str(connection.tenant_id), connection.pk, actor)


def last_registrations(*, connection: Connection) -> dict[str, DipExchange]:
    """The latest webhook-configuration exchange per target (interface id, or ``status``)."""
    latest: dict[str, DipExchange] = {}
    for exchange in DipExchange.objects.filter(
        connection=connection, operation=ExchangeOperation.WEBHOOK
    ).order_by("-started_at")[:200]:
        latest.setdefault(exchange.interface_id or "status", exchange)
    return latest
