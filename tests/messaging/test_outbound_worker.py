"""The outbound worker's own checks and ordering, against a real dipsim over mutual TLS: the final
bytes validated against the schema registry before anything is signed, urgent messages first
without breaking business-key order, and a per-connection rate limit on a controlled clock."""

from __future__ import annotations

import copy

import httpx
import pytest

from core.tenancy import tenant_context
from messaging import credentials
from messaging.exceptions.models import MessageException
from messaging.models import DipExchange, Finding, Transition
from messaging.outbound import services as outbound
from tests.messaging.conftest import SDS_DIP_ID
from tests.messaging.test_outbound import (
    held_by_dipsim,
    outbound_channel,
    run_pipeline,
    states,
    submission,
)


@pytest.fixture(autouse=True)
def _fresh_pool():
    credentials.DIP_CLIENTS.clear()
    yield
    credentials.DIP_CLIENTS.clear()


@pytest.fixture(autouse=True)
def _no_faults(dipsim):
    httpx.delete(f"{dipsim.admin_url}/admin/faults")
    yield
    httpx.delete(f"{dipsim.admin_url}/admin/faults")


def test_final_bytes_failing_the_schema_are_rejected_for_the_client_and_never_sent(
    committed_world, dipsim
):
    world = committed_world
    tenant = world.globex.id
    channel = outbound_channel(tenant, dipsim)
    bad = submission(correlation_id="CI-BAD-SCHEMA")
    custom = copy.deepcopy(bad["custom_block"])
    custom["B044"]["issuingDataServiceDIPID"] = 12  # a number where the schema wants a DIP ID
    custom["B067"]["connectionTypeIndicator"] = None
    bad["custom_block"] = custom
    with tenant_context(tenant):
        ids = outbound.submit_messages(
            channel=channel, items=[submission(correlation_id="CI-GOOD"), bad], actor="crm"
        )
    before = len(held_by_dipsim(dipsim))
    report = run_pipeline(tenant, ids)

    assert states(tenant, ids) == ["sent", "rejected"]
    assert (report.sent, report.requests) == (1, 1)
    held = held_by_dipsim(dipsim)
    assert len(held) == before + 1
    with tenant_context(tenant):
        [exception] = MessageException.objects.filter(message_id=ids[1])
        rejected = Transition.objects.get(message_id=ids[1], to_state="rejected")
        exchanges = list(DipExchange.objects.filter(sender_references__len__gt=0))
        stored = Finding.objects.filter(message_id=ids[1], severity="fatal").count()
        reference = outbound.Message.objects.get(id=ids[1]).sender_unique_reference
    # Owned by the client, every problem listed with its JSON path.
    assert (exception.category, exception.to_act, exception.code) == (
        "data_quality",
        "client",
        "OUTBOUND-INVALID",
    )
    paths = sorted(p["path"] for p in exception.detail["problems"])
    assert any("B044" in p and "issuingDataServiceDIPID" in p for p in paths), paths
    assert rejected.from_state == "accepted"
    assert rejected.detail["problems"] == exception.detail["problems"]
    assert "issuingDataServiceDIPID" in rejected.reason
    assert stored >= 1
    # Its exact final bytes are kept as evidence, but no request carried them.
    assert reference
    assert not any(reference in e.sender_references for e in exchanges)
    assert reference not in {m["senderUniqueReference"] for m in held}
    assert SDS_DIP_ID in {m["sender"] for m in held}


def test_send_order_puts_urgent_first_but_never_ahead_of_an_earlier_message_with_its_key():
    rows = [
        (1, "K1", False),
        (2, "K2", False),
        (3, "", False),
        (4, "K1", True),  # pulls 1 forward with it
        (5, "", True),
        (6, "K2", False),
    ]
    assert outbound.send_order(rows) == [1, 4, 5, 2, 3, 6]
    assert outbound.send_order(reversed(rows)) == [1, 4, 5, 2, 3, 6]
    assert outbound.send_order([(9, "", False), (8, "", False)]) == [8, 9]


def accepted_order(dipsim, references: set[str]) -> list[str]:
    """The sender references dipsim accepted, oldest first, limited to ``references``."""
    return [
        m["senderUniqueReference"]
        for m in reversed(held_by_dipsim(dipsim))
        if m["senderUniqueReference"] in references
    ]


def prepared(tenant, channel, items) -> list[int]:
    with tenant_context(tenant):
        ids = outbound.submit_messages(channel=channel, items=items, actor="crm")
        assert outbound.prepare_outbound(tenant_id=tenant, message_ids=ids) == ids
    return ids


def refs(tenant, ids) -> list[str]:
    with tenant_context(tenant):
        found = dict(
            outbound.Message.objects.filter(id__in=ids).values_list("id", "sender_unique_reference")
        )
    return [found[i] for i in ids]


def test_the_drain_after_an_outage_sends_urgent_first_and_keeps_business_key_order(
    committed_world, dipsim
):
    from tests.messaging.test_outbound import valid_mpan

    world = committed_world
    tenant = world.globex.id
    channel = outbound_channel(tenant, dipsim)
    k1, k2 = valid_mpan(31), valid_mpan(32)
    ids = prepared(
        tenant,
        channel,
        [
            submission(mpan=k1),  # normal, first for k1
            submission(mpan=k2),  # normal
            submission(mpan=k1, urgency="urgent"),  # urgent, must still follow the first k1
            submission(business_key="explicit-key-1", urgency="urgent"),
            submission(business_key="explicit-key-2"),
        ],
    )
    with tenant_context(tenant):
        assert list(
            outbound.Message.objects.filter(id__in=ids)
            .order_by("id")
            .values_list("urgent", flat=True)
        ) == [False, False, True, True, False]
    report = outbound.drain_connection(tenant_id=tenant, connection_id=channel.connection_id)
    assert report.sent == 5
    first_k1, other_k2, urgent_k1, urgent_explicit, normal_explicit = refs(tenant, ids)
    assert accepted_order(dipsim, set(refs(tenant, ids))) == [
        first_k1,
        urgent_k1,
        urgent_explicit,
        other_k2,
        normal_explicit,
    ]


def test_the_submission_api_takes_an_urgency_documented_in_openapi(committed_world, dipsim):
    from rest_framework.test import APIClient

    from tenants import services

    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        key = services.issue_api_credential(name="crm", scopes=["submit"], environment="UIT").key
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    path = f"/api/v1/channels/{channel.id}/messages/"
    bad = api.post(path, submission(urgency="asap"), format="json")
    assert bad.status_code == 400
    assert bad.json()["errors"] == [
        {"path": "$.urgency", "message": "must be one of normal, urgent"}
    ]
    with tenant_context(world.globex.id):
        assert not outbound.Message.objects.exists()
    urgent = api.post(path, submission(urgency="urgent"), format="json")
    normal = api.post(path, submission(), format="json")
    assert (urgent.status_code, normal.status_code) == (201, 201)
    read = [
        api.get(answer.json()["messages"][0]["url"]).json()["urgent"] for answer in (urgent, normal)
    ]
    assert read == [True, False]

    schema = api.get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    components = schema.json()["components"]["schemas"]
    field = components["SubmissionInput"]["properties"]["urgency"]
    assert field["default"] == "normal"
    choices = field.get("enum") or components[field["allOf"][0]["$ref"].split("/")[-1]]["enum"]
    assert set(choices) == {"normal", "urgent"}


@pytest.fixture
def frozen_clock():
    from messaging.outbound import clock

    clock.reset()
    clock.freeze()
    yield clock
    clock.reset()


def requests_sizes(tenant) -> list[int]:
    with tenant_context(tenant):
        return [
            len(e.sender_references)
            for e in DipExchange.objects.filter(sender_references__len__gt=0).order_by("id")
        ]


def test_normal_sending_keeps_to_the_connections_rate_limit(
    committed_world, dipsim, settings, frozen_clock
):
    import datetime as dt

    settings.BUSBAR_OUTBOUND_RATE_PER_SECOND = 10
    tenant = committed_world.globex.id
    channel = outbound_channel(tenant, dipsim)
    ids = prepared(tenant, channel, [submission() for _ in range(25)])

    def send_due() -> int:
        with tenant_context(tenant):
            outbound.Message.objects.filter(id__in=ids).update(next_attempt_at=None)
        return outbound.send_outbound(tenant_id=tenant, message_ids=ids).sent

    first = outbound.send_outbound(tenant_id=tenant, message_ids=ids)
    assert first.sent == 10
    # The held ones are handed back to look at again once the bucket holds them.
    assert (sorted(first.paced), first.paced_wait) == (sorted(ids[10:]), 1.0)
    with tenant_context(tenant):
        waiting = outbound.Message.objects.filter(id__in=ids, state="ready")
        assert waiting.count() == 15
        assert all("rate limit" in m.last_error and m.next_attempt_at for m in waiting)
    assert send_due() == 0  # no time has passed on the worker's clock: nothing more may go
    frozen_clock.advance(dt.timedelta(seconds=1))
    assert send_due() == 10
    frozen_clock.advance(dt.timedelta(milliseconds=500))
    assert send_due() == 5
    assert requests_sizes(tenant) == [10, 10, 5]
    assert set(states(tenant, ids)) == {"sent"}


def test_the_drain_after_the_breaker_closes_is_paced_by_the_rate_limit(
    committed_world, dipsim, settings, frozen_clock
):
    import datetime as dt

    from messaging.outbound import breaker

    settings.BUSBAR_OUTBOUND_RATE_PER_SECOND = 10
    tenant = committed_world.globex.id
    channel = outbound_channel(tenant, dipsim)
    ids = prepared(tenant, channel, [submission() for _ in range(35)])
    with tenant_context(tenant):
        for _ in range(breaker.THRESHOLD):  # the DIP failed: the breaker opened...
            breaker.record_failure(connection_id=channel.connection_id, error="503")
        assert breaker.get_breaker(connection_id=channel.connection_id).state == "open"
        # ... and a probe came back: it closed, and the backlog may drain.
        assert breaker.record_success(connection_id=channel.connection_id)
    slept: list[float] = []
    seen: list[tuple[int, int]] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        frozen_clock.advance(dt.timedelta(seconds=seconds))

    report = outbound.drain_connection(
        tenant_id=tenant,
        connection_id=channel.connection_id,
        sleep=sleep,
        on_progress=lambda r, remaining: seen.append((r.sent, remaining)),
    )
    assert report.sent == 35
    assert set(states(tenant, ids)) == {"sent"}
    assert requests_sizes(tenant) == [10, 10, 10, 5]
    assert slept == [1.0, 1.0, 0.5]
    assert seen == [(10, 25), (20, 15), (30, 5), (35, 0)]
    with tenant_context(tenant):
        row = breaker.get_breaker(connection_id=channel.connection_id)
    assert (row.drain_backlog, row.drain_done) == (35, 35)
    assert row.drain_finished_at is not None
    assert row.drain_finished_at - row.drain_started_at == dt.timedelta(seconds=2.5)
