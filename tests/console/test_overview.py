"""The tenant overview: flow health read from the rollups the message statements keep (never a
count over the message table), one status per flow with its reason, refreshed by htmx."""

from __future__ import annotations

import itertools
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.tenancy import tenant_context
from messaging.exceptions.models import MessageException
from messaging.health import get_tenant_health
from messaging.models import BreakerState, CodeRollup, ConnectionBreaker, FlowRollup
from messaging.store import services as store
from tenants import services
from tenants.models import Channel, Connection
from tests.console.test_views import signed_in


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def receive(tenant_id, connection_id: int, count: int, *, interface: str = "IF-021") -> list[int]:
    body = b"x" * count
    stored = store.store_inbound_delivery(
        tenant_id=tenant_id,
        connection_id=connection_id,
        channel_id=None,
        body=body,
        headers={},
        messages=[
            store.InboundMessageFacts(
                offset=i,
                length=1,
                sha256=bytes([i]) * 32,
                transaction_id=f"T-{interface}-{i}-{timezone.now().timestamp()}",
                interface_id=interface,
                mpan="1900012374324",
            )
            for i in range(count)
        ],
    )
    return stored.message_ids


def submit(tenant_id, connection_id: int, count: int, *, interface: str = "IF-019") -> list[int]:
    _, ids = store.store_outbound_messages(
        tenant_id=tenant_id,
        connection_id=connection_id,
        channel_id=None,
        source_body=b"{}",
        headers={},
        messages=[store.OutboundMessageFacts(interface_id=interface) for _ in range(count)],
    )
    return ids


def move(tenant_id, ids, path: list[str], **kwargs) -> None:
    for from_state, to_state in itertools.pairwise(path):
        store.transition(
            tenant_id=tenant_id,
            message_ids=ids,
            from_state=from_state,
            to_state=to_state,
            actor="pytest",
            **kwargs if to_state == path[-1] else {},
        )


def test_the_statements_that_move_messages_keep_latency_retries_failures_and_rejections(world):
    tenant = world.acme.id
    with tenant_context(tenant):
        conn = Connection.objects.get()
        inbound = receive(tenant, conn.id, 4)
        move(tenant, inbound[:3], ["received", "valid", "normalised", "delivered"])
        move(tenant, inbound[3:], ["received", "invalid"])
        finding = SimpleNamespace(
            stage="semantic", severity="error", code="SEM-001", path="$", text="t", rule="r"
        )
        warning = SimpleNamespace(
            stage="semantic", severity="warning", code="SEM-W", path="$", text="t", rule="r"
        )
        assert store.record_findings(tenant_id=tenant, findings=[(inbound[3], finding)] * 2) == 2
        store.record_findings(tenant_id=tenant, findings=[(inbound[0], warning)])
        outbound = submit(tenant, conn.id, 3)
        move(tenant, outbound, ["accepted", "ready", "sending"])
        store.schedule_retry(tenant_id=tenant, message_ids=outbound[:1], delay_seconds=0, error="x")
        move(tenant, outbound[1:2], ["sending", "sent"])
        move(tenant, outbound[2:], ["sending", "rejected"], detail={"code": "MSG0031"})

        delivered = FlowRollup.objects.filter(state="delivered").get()
        assert delivered.entered == 3
        assert delivered.age_ms_sum >= 0
        assert FlowRollup.objects.get(state="sending", shard=delivered.shard).retried == 1
        codes = {
            (r.kind, r.stage, r.code): r.count for r in CodeRollup.objects.all()
        }  # warnings are not failures
        assert codes == {("finding", "semantic", "SEM-001"): 2, ("rejection", "", "MSG0031"): 1}

        health = get_tenant_health(now=timezone.now())
    flows = {(f.direction, f.interface_id): f for f in health.flows}
    inbound_flow, outbound_flow = flows["inbound", "IF-021"], flows["outbound", "IF-019"]
    assert inbound_flow.volume == 4
    assert inbound_flow.failed == 1
    assert inbound_flow.failures_by_stage == {"semantic": 2}
    assert inbound_flow.latency_ms is not None
    assert outbound_flow.volume == 3
    assert outbound_flow.rejections == {"MSG0031": 1}
    assert outbound_flow.retries == 1
    assert outbound_flow.backlog == 1  # the retried one still sits in sending
    assert sum(health.inbound_hourly) == 4
    assert sum(health.outbound_hourly) == 3
    # One failure of four inbound is over the degraded threshold; a rejection and a retry this
    # hour make the outbound flow degraded too, with the reasons said.
    assert inbound_flow.status == "degraded"
    assert "1 failed or rejected of 4" in inbound_flow.reason
    assert outbound_flow.status == "degraded"
    assert "1 retries this hour" in outbound_flow.reason


def test_the_overview_never_counts_the_message_table(world):
    tenant = world.acme.id
    with tenant_context(tenant):
        conn = Connection.objects.get()
        ids = receive(tenant, conn.id, 5)
        move(tenant, ids[:2], ["received", "valid"])
        with CaptureQueriesContext(connection) as queries:
            health = get_tenant_health(now=timezone.now())
    assert health.flows
    touching = [q["sql"] for q in queries if "messaging_message" in q["sql"]]
    # The only read of the message table is the oldest-waiting probe: min(id) through the work
    # index for the flows with a backlog, never count(*).
    assert touching
    for sql in touching:
        assert "min(m.id)" in sql
        assert "count(" not in sql.lower()


def test_each_flow_gets_one_status_with_its_reason(world):
    tenant = world.acme.id
    now = timezone.now()
    with tenant_context(tenant):
        conn = Connection.objects.get()
        channel = Channel.objects.get()
        channel.expected_cadence = timedelta(minutes=30)
        channel.save()
        quiet = {f.interface_id: f for f in get_tenant_health(now=now).flows}["IF-021"]
        assert quiet.status == "quiet"
        assert "expected every 30 min" in quiet.reason

        receive(tenant, conn.id, 2)

        def inbound_at(moment):
            return {f.interface_id: f for f in get_tenant_health(now=moment).flows}["IF-021"]

        assert inbound_at(now).status == "healthy"  # two just received: waiting is normal...
        slow = inbound_at(now + timedelta(minutes=5))
        assert slow.status == "degraded"  # ...for a while...
        assert re.search(r"2 waiting, oldest for [45] min", slow.reason)
        stuck = inbound_at(now + timedelta(minutes=20))
        assert stuck.status == "failing"  # ...but not for twenty minutes
        assert re.search(r"2 waiting, oldest for (19|20) min", stuck.reason)

        submit(tenant, conn.id, 1, interface="IF-019")
        ConnectionBreaker.objects.create(
            connection=conn, state=BreakerState.OPEN, updated_at=now, last_error="DIP 503"
        )
        out = {f.interface_id: f for f in get_tenant_health(now=now).flows}["IF-019"]
        assert out.status == "failing"
        assert "circuit open" in out.reason


def test_open_exceptions_are_summed_by_category_owner_and_age(world):
    tenant = world.acme.id
    with tenant_context(tenant):
        conn = Connection.objects.get()
        for category, to_act in [
            ("technical", "provider"),
            ("data_quality", "client"),
            ("data_quality", "client"),
        ]:
            MessageException.objects.create(
                connection=conn,
                interface_id="IF-021",
                category=category,
                severity="error",
                owner_queue="q",
                to_act=to_act,
                code="X",
                title="t",
            )
        MessageException.objects.create(
            category="technical",
            severity="error",
            owner_queue="q",
            to_act="market_party",
            code="Y",
            title="t",
            state="resolved",
        )
        health = get_tenant_health(now=timezone.now())
    summary = health.exceptions
    assert summary.total == 3
    assert dict(summary.by_category) == {"Data quality": 2, "Technical": 1}
    assert [(label, n) for _, label, n in summary.by_owner] == [("Yours", 2), ("Provider's", 1)]
    assert summary.by_age == [("under 1 h", 3)]
    flow = {f.interface_id: f for f in health.flows}["IF-021"]
    assert flow.open_exceptions == 3
    assert flow.status == "degraded"


def test_the_overview_page_draws_charts_and_refreshes_as_a_fragment(world):
    tenant = world.acme.id
    with tenant_context(tenant):
        receive(tenant, Connection.objects.get().id, 3)
    client = signed_in("alice")
    page = client.get("/").content.decode()
    assert 'data-testid="volume-chart"' in page
    assert re.search(r'hx-get="/" hx-trigger="every 30s"', page)
    assert "<script>" not in page  # the CSP allows no inline script
    assert "3 messages in 24 hours" in page
    fragment = client.get("/", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<div id="overview"')
    assert "<html" not in fragment
    flows = client.get("/flows/").content.decode()
    assert "IF-021" in flows
    assert 'id="flow-table"' in flows


def test_another_tenants_flows_never_show(world):
    with tenant_context(world.acme.id):
        conn = Connection.objects.get()
        receive(world.acme.id, conn.id, 2, interface="IF-033")
        services.create_channel(connection=conn, interface_id="IF-033", direction="inbound")
    page = signed_in("charlie").get("/").content.decode()
    assert "IF-033" not in page
    assert "ACME" not in page


def test_the_overview_reads_the_rollups_of_the_hours_it_shows_not_the_whole_history(world):
    """With a month of rollups kept, the overview's reads of them are bounded by the hour (an
    index led by tenant_id and hour), not by walking every hour the flow keeps."""
    tenant = world.acme.id
    now = timezone.now()
    with tenant_context(tenant):
        conn = Connection.objects.get()
        receive(tenant, conn.id, 2)
        hours = [now - timedelta(hours=h) for h in range(30 * 24)]
        FlowRollup.objects.bulk_create(
            FlowRollup(
                connection_id=conn.id,
                interface_id=interface,
                direction="inbound",
                hour=hour.replace(minute=0, second=0, microsecond=0),
                state=state,
                shard=shard,
                entered=1,
            )
            for hour in hours
            for interface in ("IF-033", "IF-036")
            for state in ("received", "delivered")
            for shard in range(4)
        )
        CodeRollup.objects.bulk_create(
            CodeRollup(
                connection_id=conn.id,
                interface_id="IF-033",
                direction="inbound",
                hour=hour.replace(minute=0, second=0, microsecond=0),
                kind="finding",
                stage="semantic",
                code=f"SEM-00{shard}",
                shard=shard,
                count=1,
            )
            for hour in hours
            for shard in range(8)
        )
        with CaptureQueriesContext(connection) as queries:
            health = get_tenant_health(now=now)
        flows = {f.interface_id: f for f in health.flows}
        assert flows["IF-033"].volume == 4 * 24  # the last 24 hours of the month only
        reads = re.compile(r"messaging_(flow|code)_rollup")
        rollup_reads = [q["sql"] for q in queries if reads.search(q["sql"])]
        assert len(rollup_reads) == 3  # the hourly flows, the last traffic, the codes
        with connection.cursor() as cursor:
            for sql in rollup_reads:
                table = reads.search(sql).group(0)
                cursor.execute(
                    "SELECT pg_total_relation_size(%s) / current_setting('block_size')::int",
                    [table],
                )
                (whole,) = cursor.fetchone()
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
                plan = cursor.fetchone()[0][0]["Plan"]
                read = plan["Shared Hit Blocks"] + plan["Shared Read Blocks"]
                # A tenth of the month is three days: a read bounded by the hour stays far under
                # it; a walk of the flows' keys or of the table does not.
                assert read < whole / 10, (sql, read, whole)
