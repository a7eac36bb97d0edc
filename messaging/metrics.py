"""Prometheus figures about the message flow, read at scrape time from the store's counters.

Everything comes from PostgreSQL through the support role (metadata only), so the figures are the
same whichever web process is scraped and survive restarts: per tenant, direction, interface and
state, how many messages are in each state now and how many have entered it in all; the age of the
oldest message waiting in each work state (one index probe each, ids being time-ordered); when
each channel last carried traffic and how often it is expected to; and when beat last proved the
workers alive. Label values are bounded: tenants, the DIP's interfaces, the state machine's states.
The alert rules in ``platform/prometheus/`` are written against these names.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from django.core.cache import cache
from django.db import connections
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.tasks import HEARTBEAT_KEY
from messaging.store.ids import id_time
from messaging.store.states import InboundState, OutboundState

logger = logging.getLogger(__name__)

# Where a message waits for Busbar (not for a person or the DIP): their age is Busbar's lag.
WORK_STATES: dict[str, list[str]] = {
    "inbound": [InboundState.RECEIVED, InboundState.AWAITING, InboundState.VALID],
    "outbound": [OutboundState.ACCEPTED, OutboundState.READY, OutboundState.SENDING],
}


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    labels = ["tenant", "direction", "interface", "state"]
    return {
        "messages": GaugeMetricFamily(
            "busbar_messages", "Messages in each state now.", labels=labels
        ),
        "entered": CounterMetricFamily(
            "busbar_messages_entered",
            "Messages that have entered each state (receipt or submission included).",
            labels=labels,
        ),
        "oldest": GaugeMetricFamily(
            "busbar_oldest_waiting_seconds",
            "Age of the oldest message waiting for Busbar in a work state.",
            labels=["tenant", "direction", "state"],
        ),
        "last_traffic": GaugeMetricFamily(
            "busbar_channel_last_traffic_timestamp_seconds",
            "End of the latest hour in which the channel carried a message (Unix time).",
            labels=["tenant", "direction", "interface"],
        ),
        "cadence": GaugeMetricFamily(
            "busbar_channel_expected_cadence_seconds",
            "How often a channel is expected to carry traffic (channels with a cadence only).",
            labels=["tenant", "direction", "interface"],
        ),
        "ledger_problems": GaugeMetricFamily(
            "busbar_ledger_problems",
            "Differences the latest ledger verification found between seals and their sources.",
            labels=["tenant"],
        ),
        "ledger_sealed": GaugeMetricFamily(
            "busbar_ledger_sealed_until_timestamp_seconds",
            "End of the latest sealed ledger window (Unix time).",
            labels=["tenant"],
        ),
        "reconciliation_out_of_balance": GaugeMetricFamily(
            "busbar_reconciliation_out_of_balance",
            "Channels (or chains) whose latest verdict of a reconciliation control is a breach.",
            labels=["tenant", "control"],
        ),
        "reconciliation_last_run": GaugeMetricFamily(
            "busbar_reconciliation_last_run_timestamp_seconds",
            "When the reconciliation controls last ran for the tenant (Unix time).",
            labels=["tenant"],
        ),
        "drain_backlog": GaugeMetricFamily(
            "busbar_outbound_drain_backlog",
            "Messages the latest drain after an outage found waiting on the connection.",
            labels=["tenant", "connection"],
        ),
        "drain_done": GaugeMetricFamily(
            "busbar_outbound_drain_done",
            "Messages of that backlog the drain has moved on (sent, rejected or parked).",
            labels=["tenant", "connection"],
        ),
        "draining": GaugeMetricFamily(
            "busbar_outbound_draining",
            "1 while a connection's drain after an outage is running, else 0.",
            labels=["tenant", "connection"],
        ),
        "heartbeat": GaugeMetricFamily(
            "busbar_beat_heartbeat_timestamp_seconds",
            "When a worker last ran beat's heartbeat task (Unix time).",
        ),
    }


class MessageFlowCollector(Collector):
    def describe(self) -> Iterator[Metric]:
        # Without describe(), registering would call collect() and query during start-up.
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        families = _families()
        try:
            self._collect_store(families)
        except Exception as exc:  # a scrape must not fail because one collector did
            logger.warning("metrics.message_flow_unavailable", extra={"error": str(exc)})
            connections["support"].close()
            return
        beat = cache.get(HEARTBEAT_KEY)
        if beat is not None:
            families["heartbeat"].add_metric([], float(beat))
        yield from families.values()

    def _collect_store(self, families: dict[str, GaugeMetricFamily | CounterMetricFamily]) -> None:
        with connections["support"].cursor() as cursor:
            cursor.execute("SELECT id, slug FROM tenants_tenant")
            slugs = {row[0]: row[1] for row in cursor.fetchall()}
            cursor.execute(
                "SELECT tenant_id, direction, interface_id, state, sum(count)"
                " FROM messaging_state_count GROUP BY 1, 2, 3, 4"
            )
            waiting: set[tuple[Any, str, str]] = set()
            for tenant_id, direction, interface, state, count in cursor.fetchall():
                labels = [slugs.get(tenant_id, "unknown"), direction, interface, state]
                families["messages"].add_metric(labels, float(count))
                if count and state in WORK_STATES.get(direction, ()):
                    waiting.add((tenant_id, direction, state))
            cursor.execute(
                "SELECT tenant_id, direction, interface_id, state, sum(entered),"
                " max(hour) FROM messaging_flow_rollup GROUP BY 1, 2, 3, 4"
            )
            latest: dict[tuple[str, str, str], float] = {}
            for tenant_id, direction, interface, state, entered, hour in cursor.fetchall():
                slug = slugs.get(tenant_id, "unknown")
                families["entered"].add_metric([slug, direction, interface, state], float(entered))
                if state in ("received", "accepted"):
                    end_of_hour = hour.timestamp() + 3600
                    key = (slug, direction, interface)
                    latest[key] = max(latest.get(key, 0.0), end_of_hour)
            for key, when in sorted(latest.items()):
                families["last_traffic"].add_metric(list(key), min(when, time.time()))
            now = time.time()
            for tenant_id, direction, state in sorted(waiting, key=str):
                cursor.execute(
                    "SELECT min(id) FROM messaging_message"
                    " WHERE tenant_id = %s AND direction = %s AND state = %s",
                    [tenant_id, direction, state],
                )
                oldest = cursor.fetchone()[0]
                if oldest is not None:
                    age = max(now - id_time(int(oldest)).timestamp(), 0.0)
                    families["oldest"].add_metric(
                        [slugs.get(tenant_id, "unknown"), direction, state], round(age, 3)
                    )
            cursor.execute(
                "SELECT DISTINCT ON (tenant_id) tenant_id, jsonb_array_length(problems)"
                " FROM messaging_ledger_check ORDER BY tenant_id, checked_at DESC"
            )
            for tenant_id, problems in cursor.fetchall():
                families["ledger_problems"].add_metric(
                    [slugs.get(tenant_id, "unknown")], float(problems)
                )
            cursor.execute("SELECT tenant_id, max(window_to) FROM messaging_seal GROUP BY 1")
            for tenant_id, sealed_until in cursor.fetchall():
                families["ledger_sealed"].add_metric(
                    [slugs.get(tenant_id, "unknown")], sealed_until.timestamp()
                )
            # The latest verdict per control and channel: one index walk per tenant and control.
            cursor.execute(
                "SELECT tenant_id, control, count(*) FILTER (WHERE status = 'breach'), max(run_at)"
                " FROM (SELECT DISTINCT ON (tenant_id, control, channel_id) tenant_id, control,"
                " status, run_at FROM messaging_reconciliation_result"
                " ORDER BY tenant_id, control, channel_id, id DESC) latest GROUP BY 1, 2"
            )
            last_run: dict[str, float] = {}
            for tenant_id, control, breaches, run_at in cursor.fetchall():
                slug = slugs.get(tenant_id, "unknown")
                families["reconciliation_out_of_balance"].add_metric([slug, control], breaches)
                last_run[slug] = max(last_run.get(slug, 0.0), run_at.timestamp())
            for slug, when in sorted(last_run.items()):
                families["reconciliation_last_run"].add_metric([slug], when)
            cursor.execute(
                "SELECT tenant_id, connection_id, drain_backlog, drain_done,"
                " drain_finished_at IS NULL FROM messaging_connectionbreaker"
                " WHERE drain_started_at IS NOT NULL"
            )
            for tenant_id, connection_id, backlog, done, running in cursor.fetchall():
                labels = [slugs.get(tenant_id, "unknown"), str(connection_id)]
                families["drain_backlog"].add_metric(labels, float(backlog))
                families["drain_done"].add_metric(labels, float(done))
                families["draining"].add_metric(labels, 1.0 if running else 0.0)
            cursor.execute(
                "SELECT tenant_id, direction, interface_id,"
                " extract(epoch FROM expected_cadence) FROM tenants_channel"
                " WHERE expected_cadence IS NOT NULL AND status <> 'disabled'"
            )
            for tenant_id, direction, interface, seconds in cursor.fetchall():
                families["cadence"].add_metric(
                    [slugs.get(tenant_id, "unknown"), direction, interface], float(seconds)
                )
