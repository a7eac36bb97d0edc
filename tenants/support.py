"""Provider support's view across tenants: metadata only, read through the support role, whose
column grants leave out secrets and payloads (the database refuses anything else)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import connections


@dataclass(frozen=True)
class TenantHealth:
    slug: str
    name: str
    is_active: bool
    identities: int
    connections: int
    channels: int
    active_certificates: int
    soonest_expiry: datetime | None
    security_events_24h: int
    failed_sign_ins_24h: int


@dataclass(frozen=True)
class SecurityEvent:
    occurred_at: datetime
    tenant_slug: str | None
    actor: str
    action: str
    source_address: str | None


def list_tenant_health() -> list[TenantHealth]:
    """One row per tenant: its set-up, its credentials' nearest expiry, and its last day's
    security events."""
    with connections["support"].cursor() as cursor:
        cursor.execute(
            """
            SELECT t.slug, t.name, t.is_active,
                   (SELECT count(*) FROM tenants_dipidentity i WHERE i.tenant_id = t.id),
                   (SELECT count(*) FROM tenants_connection c WHERE c.tenant_id = t.id),
                   (SELECT count(*) FROM tenants_channel ch WHERE ch.tenant_id = t.id),
                   (SELECT count(*) FROM tenants_certificate ce
                     WHERE ce.tenant_id = t.id AND ce.status = 'active'
                       AND ce.purpose <> 'trust_anchor'),
                   (SELECT min(ce.not_after) FROM tenants_certificate ce
                     WHERE ce.tenant_id = t.id AND ce.status IN ('active', 'retiring')),
                   (SELECT count(*) FROM core_auditevent a
                     WHERE a.tenant_id = t.id AND a.category = 'security'
                       AND a.occurred_at > now() - interval '24 hours'),
                   (SELECT count(*) FROM core_auditevent a
                     WHERE a.action IN ('login.failed',
                           'login.second_factor_failed', 'login.throttled')
                       AND a.occurred_at > now() - interval '24 hours'
                       -- sign-in failures are the person's own (tenant-less) events: count
                       -- those against the tenant's members
                       AND (a.tenant_id = t.id
                            OR (a.tenant_id IS NULL AND a.actor_user_id IN (
                                SELECT m.user_id FROM tenants_membership m
                                WHERE m.tenant_id = t.id))))
            FROM tenants_tenant t
            ORDER BY t.name
            """
        )
        return [TenantHealth(*row) for row in cursor.fetchall()]


def list_recent_security_events(*, limit: int = 50) -> list[SecurityEvent]:
    """The latest security events of every tenant, and those that belong to none."""
    with connections["support"].cursor() as cursor:
        cursor.execute(
            """
            SELECT a.occurred_at, t.slug, a.actor, a.action, host(a.source_address)
            FROM core_auditevent a LEFT JOIN tenants_tenant t ON t.id = a.tenant_id
            WHERE a.category = 'security'
            ORDER BY a.occurred_at DESC
            LIMIT %s
            """,
            [limit],
        )
        return [SecurityEvent(*row) for row in cursor.fetchall()]
