"""Monitoring as code: the flow metrics move with traffic, and the alert rules and dashboard are
checked by promtool and against the metric names the collectors really expose."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from core.tenancy import tenant_context
from messaging.metrics import MessageFlowCollector
from messaging.store import services as store
from tenants.metrics import CertificateCollector
from tenants.models import Channel, Connection
from tests.conftest import build_world

PLATFORM = Path(__file__).resolve().parents[2] / "platform"
RULES = PLATFORM / "prometheus" / "busbar.rules.yml"
RULE_TESTS = PLATFORM / "prometheus" / "busbar.rules.test.yml"
DASHBOARD = PLATFORM / "grafana" / "busbar-flow.json"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("BUSBAR_REQUIRE_PROMTOOL"):
            pytest.fail("promtool is required here (Debian's prometheus package)")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return found


def test_the_alert_rules_are_valid() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 15 rules found" in result.stdout


def test_every_alert_rule_passes_its_unit_tests() -> None:
    result = subprocess.run(
        [_promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        cwd=RULE_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    defined = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    assert defined - tested == set(), "every alert needs a unit test"


def _exposed_names() -> set[str]:
    names: set[str] = set()
    for collector in (MessageFlowCollector(), CertificateCollector()):
        for family in collector.describe():
            names.add(family.name)
            if family.type == "counter":
                names.add(family.name + "_total")
    return names


def test_rules_and_dashboard_name_only_metrics_busbar_exposes() -> None:
    exposed = _exposed_names()
    rules = set(re.findall(r"\b(busbar_[a-z_]+)", RULES.read_text()))
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    charted = set(re.findall(r"\b(busbar_[a-z_]+)", exprs))
    assert rules - exposed == set()
    assert charted - exposed == set()
    assert len(dashboard["panels"]) >= 6


def _scrape() -> dict[tuple[str, frozenset], float]:
    samples: dict[tuple[str, frozenset], float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_flow_metrics_move_as_messages_flow_and_backlog_age_grows(committed_db) -> None:
    world = build_world()
    with tenant_context(world.acme.id):
        connection = Connection.objects.get()
        channel = Channel.objects.get()
        stored = store.store_inbound_delivery(
            tenant_id=world.acme.id,
            connection_id=connection.id,
            channel_id=channel.id,
            body=b"[{}, {}]",
            headers={},
            messages=[
                store.InboundMessageFacts(
                    offset=1, length=2, sha256=b"a" * 32, interface_id="IF-021"
                ),
                store.InboundMessageFacts(
                    offset=5, length=2, sha256=b"b" * 32, interface_id="IF-021"
                ),
            ],
        )
    labels = {"tenant": "acme", "direction": "inbound", "interface": "IF-021"}
    before = _scrape()
    assert _value(before, "busbar_messages", **labels, state="received") == 2
    assert _value(before, "busbar_messages_entered_total", **labels, state="received") == 2
    first_age = _value(
        before,
        "busbar_oldest_waiting_seconds",
        tenant="acme",
        direction="inbound",
        state="received",
    )
    assert first_age is not None
    # nobody processes them: the age of the oldest keeps rising
    time.sleep(1.1)
    later = _value(
        _scrape(),
        "busbar_oldest_waiting_seconds",
        tenant="acme",
        direction="inbound",
        state="received",
    )
    assert later is not None
    assert later >= first_age + 1
    with tenant_context(world.acme.id):
        store.transition(
            tenant_id=world.acme.id,
            message_ids=stored.message_ids,
            from_state="received",
            to_state="valid",
            actor="pytest",
        )
    after = _scrape()
    assert _value(after, "busbar_messages", **labels, state="received") == 0
    assert _value(after, "busbar_messages", **labels, state="valid") == 2
    assert _value(after, "busbar_messages_entered_total", **labels, state="valid") == 2
    assert (
        _value(
            after,
            "busbar_oldest_waiting_seconds",
            tenant="acme",
            direction="inbound",
            state="received",
        )
        is None
    )
    assert (
        _value(
            after,
            "busbar_messages",
            tenant="globex",
            direction="inbound",
            interface="IF-021",
            state="received",
        )
        is None
    )
    last = _value(after, "busbar_channel_last_traffic_timestamp_seconds", **labels)
    assert last is not None
    assert time.time() - 3600 <= last <= time.time() + 1
