"""Flow health for the tenant overview: per connection and channel, what moved, what failed, what
waits and whether the channel has gone quiet, with one status and the reasons for it.

Everything is read from the rollups the message statements keep (``messaging_flow_rollup``,
``messaging_state_count``, ``messaging_code_rollup``), from the small per-connection tables
(breaker, certificates) and the exception queue; the message table is touched only for the age of
the oldest waiting message, one index probe per flow with a backlog. The cost is the same with a
thousand messages stored or ten million. Runs inside the tenant's context (RLS).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection as db

from core.tenancy import current_tenant_id
from messaging.exceptions.models import Actor, Category, ExceptionState, MessageException
from messaging.metrics import WORK_STATES
from messaging.models import BreakerState, ConnectionBreaker
from messaging.store.ids import id_time
from tenants.models import Certificate, CertificatePurpose, CertificateStatus, Channel, Connection

HOURS = 24
# Where a flow's volume is counted: receipt inbound, submission outbound.
ENTRY_STATE = {"inbound": "received", "outbound": "accepted"}
# The state whose latency tells whether the flow keeps up: handed on inbound, taken by the DIP out.
DONE_STATE = {"inbound": "delivered", "outbound": "sent"}
FAILED_STATES = {"inbound": {"invalid", "failed"}, "outbound": {"invalid", "rejected", "failed"}}
# How far back "last traffic" looks: past this a flow is simply "no traffic in 7 days".
LAST_TRAFFIC_LOOKBACK = timedelta(days=7)
WAIT_DEGRADED = timedelta(minutes=2)
WAIT_FAILING = timedelta(minutes=15)
CERTIFICATE_WARNING_DAYS = 14
FAILURE_RATE_DEGRADED = 0.05
FAILURE_RATE_FAILING = 0.5
STATUS_ORDER = ("failing", "degraded", "quiet", "healthy")
AGE_BUCKETS = (
    ("under 1 h", timedelta(hours=1)),
    ("1 to 24 h", timedelta(hours=24)),
    ("1 to 7 days", timedelta(days=7)),
    ("over 7 days", None),
)


@dataclass
class ConnectionHealth:
    id: int
    name: str
    environment: str
    circuit: str  # closed, open, half_open
    circuit_error: str = ""
    certificate_days: int | None = None  # the soonest-expiring active certificate; None: none


@dataclass
class FlowHealth:
    connection: ConnectionHealth
    interface_id: str
    direction: str
    channel_id: int | None = None
    channel_status: str = ""
    cadence: timedelta | None = None
    hourly: list[int] = field(default_factory=lambda: [0] * HOURS)  # oldest first
    failed: int = 0  # entered a failure state in the window
    failures_by_stage: dict[str, int] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    latency_ms: float | None = None
    retries: int = 0
    retries_last_hour: int = 0
    backlog: int = 0
    oldest_waiting: timedelta | None = None
    last_traffic: datetime | None = None  # end of the latest hour with traffic
    open_exceptions: int = 0
    status: str = "healthy"
    reasons: list[str] = field(default_factory=list)

    @property
    def volume(self) -> int:
        return sum(self.hourly)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "messages flowing, nothing waiting"

    @property
    def sparkline(self) -> str:
        """SVG polyline points for the hourly volumes in a 96 x 24 box."""
        return polyline(self.hourly, width=96, height=24)


@dataclass
class ExceptionSummary:
    total: int = 0
    by_category: list[tuple[str, int]] = field(default_factory=list)
    by_owner: list[tuple[str, str, int]] = field(default_factory=list)  # (key, label, count)
    by_age: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class TenantHealth:
    now: datetime
    hours: list[datetime]  # the chart's hours, oldest first
    flows: list[FlowHealth]
    connections: list[ConnectionHealth]
    inbound_hourly: list[int]
    outbound_hourly: list[int]
    exceptions: ExceptionSummary
    counts: dict[str, int]  # flows per status

    @property
    def chart(self) -> dict[str, Any]:
        """Bars for inbound and outbound per hour in a 480 x 120 box, with the scale's top."""
        top = max([*self.inbound_hourly, *self.outbound_hourly, 1])
        slot = 480 / HOURS
        bars = []
        for index, (inbound, outbound) in enumerate(
            zip(self.inbound_hourly, self.outbound_hourly, strict=True)
        ):
            x = index * slot
            hin = round(inbound / top * 110, 1)
            hout = round(outbound / top * 110, 1)
            bars.append(
                {
                    "x_in": round(x + 1, 1),
                    "x_out": round(x + slot / 2, 1),
                    "width": round(slot / 2 - 1, 1),
                    "y_in": round(120 - hin, 1),
                    "h_in": hin,
                    "y_out": round(120 - hout, 1),
                    "h_out": hout,
                    "hour": self.hours[index],
                    "inbound": inbound,
                    "outbound": outbound,
                }
            )
        return {"top": top, "bars": bars}


def polyline(values: list[int], *, width: int, height: int) -> str:
    top = max([*values, 1])
    step = width / max(len(values) - 1, 1)
    return " ".join(
        f"{round(i * step, 1)},{round(height - 1 - v / top * (height - 2), 1)}"
        for i, v in enumerate(values)
    )


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def get_tenant_health(*, now: datetime) -> TenantHealth:
    """The current tenant's flow health at ``now`` (an aware datetime)."""
    current_hour = _hour(now)
    start = current_hour - timedelta(hours=HOURS - 1)
    hours = [start + timedelta(hours=i) for i in range(HOURS)]
    connections = _connections(now)
    flows: dict[tuple[int, str, str], FlowHealth] = {}

    def flow(connection_id: int, interface_id: str, direction: str) -> FlowHealth:
        key = (connection_id, interface_id, direction)
        if key not in flows:
            conn = connections.get(connection_id) or ConnectionHealth(
                id=connection_id, name=f"connection {connection_id}", environment="", circuit=""
            )
            flows[key] = FlowHealth(connection=conn, interface_id=interface_id, direction=direction)
        return flows[key]

    for channel in Channel.objects.order_by("connection_id", "direction", "interface_id"):
        f = flow(channel.connection_id, channel.interface_id, channel.direction)
        f.channel_id, f.channel_status, f.cadence = (
            channel.id,
            channel.status,
            channel.expected_cadence,
        )

    tenant = str(current_tenant_id())
    inbound_hourly, outbound_hourly = [0] * HOURS, [0] * HOURS
    done: dict[tuple[int, str, str], list[int]] = defaultdict(lambda: [0, 0])
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT connection_id, interface_id, direction, hour, state, sum(entered),"
            " sum(age_ms_sum), sum(retried) FROM messaging_flow_rollup"
            " WHERE tenant_id = %s AND hour >= %s"
            " GROUP BY 1, 2, 3, 4, 5",
            [tenant, start],
        )
        for (
            conn_id,
            interface_id,
            direction,
            hour,
            state,
            entered,
            age_sum,
            retried,
        ) in cursor.fetchall():
            f = flow(conn_id, interface_id, direction)
            index = int((hour - start).total_seconds() // 3600)
            if not 0 <= index < HOURS:
                continue
            if state == ENTRY_STATE.get(direction):
                f.hourly[index] += int(entered)
                series = inbound_hourly if direction == "inbound" else outbound_hourly
                series[index] += int(entered)
            if state in FAILED_STATES.get(direction, ()):
                f.failed += int(entered)
            if state == DONE_STATE.get(direction):
                done[conn_id, interface_id, direction][0] += int(entered)
                done[conn_id, interface_id, direction][1] += int(age_sum)
            f.retries += int(retried)
            if hour == current_hour:
                f.retries_last_hour += int(retried)
        for key, (count, age_sum) in done.items():
            if count:
                flows[key].latency_ms = age_sum / count

        # The newest hour a message entered each flow: one backward probe of the rollup's key per
        # flow, which stops at the flow's latest traffic (a busy flow reads its last hour only).
        # Every flow that ever moved a message has its counters in messaging_state_count (kept
        # by the same statements, never deleted), a few rows per flow.
        cursor.execute(
            "SELECT f.connection_id, f.interface_id, f.direction,"
            " (SELECT max(r.hour) FROM messaging_flow_rollup r"
            "  WHERE r.tenant_id = %s AND r.connection_id = f.connection_id"
            "  AND r.interface_id = f.interface_id AND r.direction = f.direction"
            "  AND r.hour >= %s AND r.state IN ('received', 'accepted') AND r.entered > 0)"
            " FROM (SELECT DISTINCT connection_id, interface_id, direction"
            "  FROM messaging_state_count WHERE tenant_id = %s) AS f",
            [tenant, current_hour - LAST_TRAFFIC_LOOKBACK, tenant],
        )
        for conn_id, interface_id, direction, hour in cursor.fetchall():
            if hour is None:
                continue
            flow(conn_id, interface_id, direction).last_traffic = min(
                hour + timedelta(hours=1), now
            )

        cursor.execute(
            "SELECT connection_id, interface_id, direction, kind, stage, code, sum(count)"
            " FROM messaging_code_rollup WHERE tenant_id = %s AND hour >= %s"
            " GROUP BY 1, 2, 3, 4, 5, 6",
            [tenant, start],
        )
        for conn_id, interface_id, direction, kind, stage, code, count in cursor.fetchall():
            f = flow(conn_id, interface_id, direction)
            if kind == "finding":
                f.failures_by_stage[stage] = f.failures_by_stage.get(stage, 0) + int(count)
            else:
                f.rejections[code] = f.rejections.get(code, 0) + int(count)

        cursor.execute(
            "SELECT connection_id, interface_id, direction, state, sum(count)"
            " FROM messaging_state_count WHERE tenant_id = %s"
            " GROUP BY 1, 2, 3, 4 HAVING sum(count) > 0",
            [tenant],
        )
        waiting: list[tuple[int, str, str, str]] = []
        for conn_id, interface_id, direction, state, count in cursor.fetchall():
            if state in WORK_STATES.get(direction, ()):
                flow(conn_id, interface_id, direction).backlog += int(count)
                waiting.append((conn_id, interface_id, direction, state))
        if waiting:
            # One probe of the work index per (flow, state) with a backlog: its oldest id.
            cursor.execute(
                "SELECT w.c, w.i, w.d, (SELECT min(m.id) FROM messaging_message m"
                "  WHERE m.tenant_id = %s AND m.direction = w.d"
                "  AND m.state = w.s AND m.interface_id = w.i AND m.connection_id = w.c"
                "  AND m.state NOT IN ('delivered', 'acknowledged', 'rejected', 'superseded'))"
                " FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) AS w(c, i, d, s)",
                [
                    tenant,
                    [w[0] for w in waiting],
                    [w[1] for w in waiting],
                    [w[2] for w in waiting],
                    [w[3] for w in waiting],
                ],
            )
            for conn_id, interface_id, direction, oldest in cursor.fetchall():
                if oldest is None:
                    continue
                f = flow(conn_id, interface_id, direction)
                age = max(now - id_time(int(oldest)), timedelta(0))
                f.oldest_waiting = max(f.oldest_waiting or timedelta(0), age)

    exceptions = _exceptions(now, flow)
    for f in flows.values():
        _judge(f, now)
    ordered = sorted(
        flows.values(),
        key=lambda f: (
            STATUS_ORDER.index(f.status),
            f.connection.id,
            f.direction,
            f.interface_id,
        ),
    )
    counts = {status: sum(1 for f in ordered if f.status == status) for status in STATUS_ORDER}
    return TenantHealth(
        now=now,
        hours=hours,
        flows=ordered,
        connections=list(connections.values()),
        inbound_hourly=inbound_hourly,
        outbound_hourly=outbound_hourly,
        exceptions=exceptions,
        counts=counts,
    )


def _connections(now: datetime) -> dict[int, ConnectionHealth]:
    found = {
        c.id: ConnectionHealth(
            id=c.id,
            name=f"{c.identity.mpid} {c.identity.role_code} · {c.environment}",
            environment=c.environment,
            circuit=BreakerState.CLOSED,
        )
        for c in Connection.objects.select_related("identity").order_by("id")
    }
    for breaker in ConnectionBreaker.objects.all():
        if breaker.connection_id in found:
            found[breaker.connection_id].circuit = breaker.state
            found[breaker.connection_id].circuit_error = breaker.last_error
    active = Certificate.objects.filter(
        status=CertificateStatus.ACTIVE,
        purpose__in=[CertificatePurpose.SIGNING, CertificatePurpose.MTLS],
        not_after__isnull=False,
    ).values_list("connection_id", "not_after")
    for connection_id, not_after in active:
        conn = found.get(connection_id)
        if conn is None or not_after is None:
            continue
        days = (not_after - now).days if not_after > now else -1
        conn.certificate_days = (
            days if conn.certificate_days is None else min(conn.certificate_days, days)
        )
    return found


def _exceptions(now: datetime, flow: Any) -> ExceptionSummary:
    """Open exceptions by category, by whose it is to act and by age (one grouped read of the
    queue's own index; the queue holds failures, not traffic)."""
    summary = ExceptionSummary()
    categories: dict[str, int] = defaultdict(int)
    owners: dict[str, int] = defaultdict(int)
    ages: dict[str, int] = defaultdict(int)
    rows = (
        MessageException.objects.filter(state__in=[ExceptionState.OPEN, ExceptionState.RETRYING])
        .values_list(
            "connection_id", "interface_id", "direction", "category", "to_act", "created_at"
        )
        .order_by()
    )
    for connection_id, interface_id, direction, category, to_act, created_at in rows.iterator():
        summary.total += 1
        categories[category] += 1
        owners[to_act] += 1
        age = now - created_at
        for label, limit in AGE_BUCKETS:
            if limit is None or age < limit:
                ages[label] += 1
                break
        if connection_id is not None and interface_id:
            full = "inbound" if direction == "in" else "outbound"
            flow(connection_id, interface_id, full).open_exceptions += 1
    labels = dict(Category.choices)
    summary.by_category = [(labels.get(k, k), v) for k, v in sorted(categories.items())]
    actor_labels: dict[str, str] = {
        Actor.CLIENT: "Yours",
        Actor.PROVIDER: "Provider's",
        Actor.MARKET_PARTY: "A market party's",
    }
    summary.by_owner = [(k, actor_labels.get(k, k), owners[k]) for k in Actor.values if owners[k]]
    summary.by_age = [(label, ages[label]) for label, _ in AGE_BUCKETS if ages[label]]
    return summary


def _judge(f: FlowHealth, now: datetime) -> None:
    """One status per flow and the reasons for it: failing beats degraded beats quiet."""
    failing: list[str] = []
    degraded: list[str] = []
    quiet: list[str] = []
    conn = f.connection
    if f.direction == "outbound" and conn.circuit == BreakerState.OPEN:
        failing.append("circuit open: nothing is sent to the DIP until the probe succeeds")
    elif f.direction == "outbound" and conn.circuit == BreakerState.HALF_OPEN:
        degraded.append("circuit half-open: a probe request decides")
    if conn.certificate_days is not None and conn.certificate_days < 0:
        failing.append("active certificate expired")
    elif conn.certificate_days is not None and conn.certificate_days <= CERTIFICATE_WARNING_DAYS:
        degraded.append(f"certificate expires in {conn.certificate_days} days")
    if f.oldest_waiting is not None:
        minutes = int(f.oldest_waiting.total_seconds() // 60)
        if f.oldest_waiting >= WAIT_FAILING:
            failing.append(f"{f.backlog} waiting, oldest for {minutes} min")
        elif f.oldest_waiting >= WAIT_DEGRADED:
            degraded.append(f"{f.backlog} waiting, oldest for {minutes} min")
    handled = f.volume + f.failed
    if f.failed and handled:
        rate = f.failed / max(f.volume, f.failed)
        text = f"{f.failed} failed or rejected of {f.volume} in {HOURS} h"
        if rate >= FAILURE_RATE_FAILING and f.failed >= 3:
            failing.append(text)
        elif rate >= FAILURE_RATE_DEGRADED:
            degraded.append(text)
    if f.retries_last_hour:
        degraded.append(f"{f.retries_last_hour} retries this hour")
    if f.open_exceptions:
        degraded.append(f"{f.open_exceptions} open exception{'s' if f.open_exceptions > 1 else ''}")
    if f.cadence and f.channel_status != "disabled":
        if f.last_traffic is None:
            quiet.append(
                f"nothing in {LAST_TRAFFIC_LOOKBACK.days} days (expected every {span(f.cadence)})"
            )
        elif now - f.last_traffic > f.cadence:
            quiet.append(
                f"nothing for {span(now - f.last_traffic)} (expected every {span(f.cadence)})"
            )
    f.reasons = failing + degraded + quiet
    f.status = "failing" if failing else "degraded" if degraded else "quiet" if quiet else "healthy"


def span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 86400 == 0 and seconds >= 86400:
        return f"{seconds // 86400} d"
    if seconds >= 3600:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{max(seconds // 60, 1)} min"
