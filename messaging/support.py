"""Provider support's cross-tenant health matrix: every tenant's channels, read through the support
role from rollups and metadata only (never a count over the message table, never content).

Each channel gets one status (failing, degraded, quiet, healthy) with its reason. Trouble that
many tenants share at once (their connections' circuits open, or the DIP answering 5xx or timing
out for them) is told apart as a platform incident: the DIP failing for everyone is not any one
tenant's problem, while an expired certificate or a broken downstream system is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.db import connections
from django.utils import timezone

# Messages still on their way: received but not yet delivered, accepted but not yet sent.
BACKLOG_STATES = {
    "inbound": ("received", "awaiting", "valid", "normalised"),
    "outbound": ("accepted", "ready", "sending"),
}
FIRST_STATE = {"inbound": "received", "outbound": "accepted"}
DIP_FAILURE_WINDOW = timedelta(minutes=15)
# A platform incident: at least this many tenants failing against the DIP in one environment.
PLATFORM_MIN_TENANTS = 2
CERTIFICATE_WARNING_DAYS = 14
BACKLOG_WARNING = 100


@dataclass
class ChannelHealth:
    tenant_id: UUID
    tenant_slug: str
    tenant_name: str
    connection_id: int
    environment: str
    channel_id: int
    interface_id: str
    direction: str
    channel_status: str
    cadence: timedelta | None
    last_traffic: datetime | None = None
    volume_24h: int = 0
    backlog: int = 0
    open_exceptions: int = 0
    circuit: str = "closed"
    circuit_error: str = ""
    certificate_days: int | None = None
    dip_failures: int = 0
    downstream_open: int = 0
    status: str = "healthy"
    reasons: list[str] = field(default_factory=list)
    platform_incident: str = ""  # the key of the platform incident that explains its trouble

    @property
    def cadence_label(self) -> str:
        return _duration(self.cadence) if self.cadence else ""

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "flowing"


@dataclass
class Incident:
    key: str
    scope: str  # "platform" (many tenants) or "tenant" (one tenant's own trouble)
    title: str
    detail: str
    tenants: list[str]
    channels: list[ChannelHealth]
    severity: str = "failing"


@dataclass
class HealthMatrix:
    channels: list[ChannelHealth]
    incidents: list[Incident]
    generated_at: datetime

    @property
    def platform_incidents(self) -> list[Incident]:
        return [i for i in self.incidents if i.scope == "platform"]

    @property
    def tenant_incidents(self) -> list[Incident]:
        return [i for i in self.incidents if i.scope == "tenant"]


def _rows(sql: str, params: list | None = None) -> list[tuple]:
    with connections["support"].cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def health_matrix(*, tenant_id: UUID | None = None, now: datetime | None = None) -> HealthMatrix:
    """Every channel of every tenant (or of one), with its flow status and reason, and the
    incidents they add up to."""
    now = now or timezone.now()
    only = " AND t.id = %s" if tenant_id else ""
    scope = [str(tenant_id)] if tenant_id else []
    channels = [
        ChannelHealth(*row)
        for row in _rows(
            "SELECT t.id, t.slug, t.name, c.id, c.environment, ch.id, ch.interface_id,"
            " ch.direction, ch.status, ch.expected_cadence"
            " FROM tenants_channel ch JOIN tenants_connection c ON c.id = ch.connection_id"
            " JOIN tenants_tenant t ON t.id = ch.tenant_id"
            f" WHERE t.is_active{only} ORDER BY t.name, c.environment, ch.interface_id,"
            " ch.direction",
            scope,
        )
    ]
    by_flow = {(c.connection_id, c.interface_id, c.direction): c for c in channels}
    by_connection: dict[int, list[ChannelHealth]] = defaultdict(list)
    for channel in channels:
        by_connection[channel.connection_id].append(channel)
    tenant_filter = " AND tenant_id = %s" if tenant_id else ""

    # Rollups kept as messages flow: last hour with traffic (in the last 30 days) and the day's
    # volume, per flow.
    for conn, iface, direction, last, day in _rows(
        "SELECT connection_id, interface_id, direction, max(hour),"
        " coalesce(sum(entered) FILTER (WHERE hour > %s), 0)"
        " FROM messaging_flow_rollup WHERE hour > %s AND entered > 0"
        " AND state = CASE direction WHEN 'inbound' THEN 'received' ELSE 'accepted' END"
        f"{tenant_filter} GROUP BY 1, 2, 3",
        [now - timedelta(hours=24), now - timedelta(days=30), *scope],
    ):
        if (found := by_flow.get((conn, iface, direction))) is not None:
            found.last_traffic = last
            found.volume_24h = int(day)
    for conn, iface, direction, state, count in _rows(
        "SELECT connection_id, interface_id, direction, state, sum(count)"
        f" FROM messaging_state_count WHERE true{tenant_filter} GROUP BY 1, 2, 3, 4",
        scope,
    ):
        flow = by_flow.get((conn, iface, direction))
        if flow is not None and state in BACKLOG_STATES.get(direction, ()):
            flow.backlog += int(count)
    for conn, iface, direction, count in _rows(
        "SELECT connection_id, interface_id, direction, count(*) FROM messaging_exception"
        f" WHERE resolved_at IS NULL{tenant_filter} GROUP BY 1, 2, 3",
        scope,
    ):
        wanted = "inbound" if direction == "in" else "outbound"
        if (flow := by_flow.get((conn, iface, wanted))) is not None:
            flow.open_exceptions = int(count)
    for conn, state, error in _rows(
        f"SELECT connection_id, state, last_error FROM messaging_connectionbreaker"
        f" WHERE true{tenant_filter}",
        scope,
    ):
        for channel in by_connection.get(conn, []):
            channel.circuit, channel.circuit_error = state, error
    for conn, not_after in _rows(
        "SELECT connection_id, min(not_after) FROM tenants_certificate"
        " WHERE status IN ('active', 'retiring') AND purpose <> 'trust_anchor'"
        f" AND connection_id IS NOT NULL{tenant_filter} GROUP BY 1",
        scope,
    ):
        for channel in by_connection.get(conn, []):
            channel.certificate_days = (not_after - now).days if not_after else None
    for conn, failures in _rows(
        "SELECT connection_id, count(*) FROM messaging_dipexchange WHERE started_at > %s"
        " AND (http_status >= 500 OR http_status IS NULL AND outcome <> 'accepted')"
        f"{tenant_filter} GROUP BY 1",
        [now - DIP_FAILURE_WINDOW, *scope],
    ):
        for channel in by_connection.get(conn, []):
            channel.dip_failures = int(failures)
    downstream_open = dict(
        _rows(
            "SELECT tenant_id, count(*) FROM tenants_downstreamendpoint"
            f" WHERE enabled AND circuit_state = 'open'{tenant_filter} GROUP BY 1",
            scope,
        )
    )
    for channel in channels:
        if channel.direction == "inbound":
            channel.downstream_open = int(downstream_open.get(channel.tenant_id, 0))
        _judge(channel, now=now)
    return HealthMatrix(channels=channels, incidents=_incidents(channels), generated_at=now)


def _judge(channel: ChannelHealth, *, now: datetime) -> None:
    """One status per flow, worst first, with every reason that applies."""
    failing: list[str] = []
    degraded: list[str] = []
    if channel.channel_status == "disabled":
        channel.status, channel.reasons = "disabled", ["channel disabled"]
        return
    if channel.certificate_days is not None and channel.certificate_days < 0:
        failing.append(f"certificate expired {-channel.certificate_days} days ago")
    # The breaker holds sending only: an inbound channel still receives while it is open.
    sending = channel.direction == "outbound"
    if channel.circuit == "open":
        error = f": {channel.circuit_error}" if channel.circuit_error else ""
        if sending:
            failing.append(f"circuit open{error}")
        else:
            degraded.append(f"circuit open{error} (sending held; receiving goes on)")
    if channel.dip_failures:
        (failing if sending and channel.circuit != "closed" else degraded).append(
            f"{channel.dip_failures} DIP failures (5xx or no answer) in 15 min"
        )
    if channel.circuit == "half_open":
        degraded.append("circuit half-open: probing the DIP")
    if channel.downstream_open:
        degraded.append(f"{channel.downstream_open} downstream system(s) unreachable")
    if channel.open_exceptions:
        degraded.append(f"{channel.open_exceptions} open exceptions")
    if channel.backlog >= BACKLOG_WARNING:
        degraded.append(f"backlog of {channel.backlog}")
    if (
        channel.certificate_days is not None
        and 0 <= channel.certificate_days < CERTIFICATE_WARNING_DAYS
    ):
        degraded.append(f"certificate expires in {channel.certificate_days} days")
    quiet = ""
    if channel.cadence and channel.direction == "inbound":
        if channel.last_traffic is None:
            quiet = "no traffic in 30 days"
        # rollups count by hour: the last hour with traffic may have ended up to an hour ago
        elif now - (channel.last_traffic + timedelta(hours=1)) > channel.cadence:
            quiet = f"quiet since {channel.last_traffic:%Y-%m-%d %H}:00 (cadence {_duration(channel.cadence)})"
    if failing:
        channel.status, channel.reasons = "failing", failing + degraded
    elif degraded:
        channel.status, channel.reasons = "degraded", degraded + ([quiet] if quiet else [])
    elif quiet:
        channel.status, channel.reasons = "quiet", [quiet]


def _duration(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    if minutes % (24 * 60) == 0:
        return f"{minutes // (24 * 60)} d"
    if minutes % 60 == 0:
        return f"{minutes // 60} h"
    return f"{minutes} min"


def _incidents(channels: list[ChannelHealth]) -> list[Incident]:
    """Group trouble: the DIP failing for several tenants of one environment at once is one
    platform incident; everything else is the tenant's own."""
    against_dip: dict[str, dict[str, list[ChannelHealth]]] = defaultdict(lambda: defaultdict(list))
    for channel in channels:
        if channel.circuit in ("open", "half_open") or channel.dip_failures:
            against_dip[channel.environment][channel.tenant_slug].append(channel)
    incidents: list[Incident] = []
    for environment, tenants in sorted(against_dip.items()):
        if len(tenants) < PLATFORM_MIN_TENANTS:
            continue
        key = f"dip-{environment.lower()}"
        affected = [c for group in tenants.values() for c in group]
        for channel in affected:
            channel.platform_incident = key
        total = len({c.tenant_slug for c in channels if c.environment == environment})
        incidents.append(
            Incident(
                key=key,
                scope="platform",
                title=f"The DIP ({environment}) is failing for {len(tenants)} of {total} tenants",
                detail="Circuits open or 5xx/no answer from the DIP across tenants: a platform or"
                " DIP-side incident, not any one tenant's set-up.",
                tenants=sorted(tenants),
                channels=affected,
            )
        )
    own: dict[str, list[ChannelHealth]] = defaultdict(list)
    for channel in channels:
        if channel.status in ("failing", "degraded", "quiet"):
            reasons = [
                r
                for r in channel.reasons
                if not (channel.platform_incident and ("circuit" in r or "DIP failures" in r))
            ]
            if reasons:
                own[channel.tenant_slug].append(channel)
    for slug, trouble in sorted(own.items()):
        worst = "failing" if any(c.status == "failing" for c in trouble) else trouble[0].status
        reasons = sorted({r for c in trouble for r in c.reasons})
        incidents.append(
            Incident(
                key=f"tenant-{slug}",
                scope="tenant",
                title=f"{trouble[0].tenant_name}: {len(trouble)} channel(s) {worst}",
                detail="; ".join(reasons),
                tenants=[slug],
                channels=trouble,
                severity=worst,
            )
        )
    return incidents


@dataclass(frozen=True)
class MessageMetadata:
    id: int
    direction: str
    interface_id: str
    event_code: str
    state: str
    transaction_id: str | None
    sender_unique_reference: str | None
    correlation_id: str
    created_at: datetime
    state_changed_at: datetime | None
    attempts: int
    last_error: str
    connection_id: int
    channel_id: int | None


MESSAGE_COLUMNS = (
    "id, direction, interface_id, event_code, state, transaction_id, sender_unique_reference,"
    " correlation_id, created_at, state_changed_at, attempts, last_error, connection_id, channel_id"
)


def list_messages(
    *, tenant_id: UUID, channel_id: int | None = None, limit: int = 50
) -> list[MessageMetadata]:
    """The tenant's latest messages' metadata (newest first; by id, which the key leads with)."""
    where = "tenant_id = %s"
    params: list[object] = [str(tenant_id)]
    if channel_id is not None:
        where += " AND channel_id = %s"
        params.append(channel_id)
    return [
        MessageMetadata(*row)
        for row in _rows(
            f"SELECT {MESSAGE_COLUMNS} FROM messaging_message WHERE {where}"
            " ORDER BY id DESC LIMIT %s",
            [*params, limit],
        )
    ]


def get_message(*, tenant_id: UUID, message_id: int) -> MessageMetadata | None:
    rows = _rows(
        f"SELECT {MESSAGE_COLUMNS} FROM messaging_message WHERE tenant_id = %s AND id = %s",
        [str(tenant_id), message_id],
    )
    return MessageMetadata(*rows[0]) if rows else None


def get_tenant(*, slug: str) -> tuple[UUID, str, str] | None:
    """(id, slug, name) of an active tenant, by slug."""
    rows = _rows("SELECT id, slug, name FROM tenants_tenant WHERE slug = %s", [slug])
    return rows[0] if rows else None
