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


def test_partition_keeps_each_business_key_in_one_batch_in_send_order():
    from messaging.outbound.inflight import partition_batches

    rows = [
        (1, "IF-021", "B"),
        (2, "IF-021", "B"),
        (3, "IF-021", "A"),
        (4, "IF-021", "A"),
        (5, "IF-021", "C"),
        (6, "IF-021", ""),  # no key: a group of its own
        (7, "IF-021", "A"),
        (8, "IF-022", "C"),  # C is in a request of another channel: held
        (9, "IF-022", "D"),
        (10, "IF-021", "C"),  # held behind 8, though C's batch has room
        (11, "IF-021", ""),
        (12, "IF-021", "A"),  # a fourth A does not fit one request of 3: held
    ]
    batches, held = partition_batches(rows, 3)
    # Each key whole in the first batch with room for it, every batch in send order.
    assert batches == [[1, 2, 5], [3, 4, 7], [6, 11], [9]]
    assert held == [8, 10, 12]
    with pytest.raises(ValueError, match="at least one message"):
        partition_batches(rows, 0)


def test_the_drain_sends_requests_in_flight_together_keeping_key_order_and_evidence(
    committed_world, dipsim, monkeypatch
):
    """Several requests in flight at once over mutual TLS, one of them losing its answer: no
    business key is in two requests in flight together, each key reaches the DIP in its order,
    every request leaves its own evidence, and the lost answer is resent with the same sender
    reference (the DIP holds every message once)."""
    import threading
    import time
    from collections import Counter

    from messaging.dip import encode_batch
    from tests.messaging.test_outbound import fault, valid_mpan

    monkeypatch.setattr(outbound, "BATCH_MAX", 3)
    monkeypatch.setattr(outbound, "DRAIN_IN_FLIGHT", 3)
    tenant = committed_world.globex.id
    channel = outbound_channel(tenant, dipsim)
    a, b, c, d, e, f = (valid_mpan(40 + n) for n in range(6))
    keys = [a, b, a, c, a, b, a, d, e, f, a]
    urgency = ["normal"] * len(keys)
    urgency[5] = "urgent"  # the second b: pulls the first b forward, never overtakes it
    ids = prepared(
        tenant,
        channel,
        [submission(mpan=key, urgency=u) for key, u in zip(keys, urgency, strict=True)],
    )
    reference_of = dict(zip(ids, refs(tenant, ids), strict=True))
    key_of = {reference_of[i]: key for i, key in zip(ids, keys, strict=True)}

    # Every request waits 0.4 s for its answer (so requests overlap); one answer is lost.
    fault(dipsim, kind="latency", channel="IF-021", params={"ms": 400})
    fault(dipsim, kind="drop_after_accept", channel="IF-021", remaining=1)
    submit = credentials.submit_batch
    requests: list[tuple[float, float, list[str]]] = []
    lock = threading.Lock()

    def watched(**kwargs):
        sent = [r for r in encode_batch(kwargs["messages"])[1] if r]
        started = time.monotonic()
        try:
            return submit(**kwargs)
        finally:
            with lock:
                requests.append((started, time.monotonic(), sent))

    monkeypatch.setattr(credentials, "submit_batch", watched)
    report = outbound.drain_connection(tenant_id=tenant, connection_id=channel.connection_id)

    assert report.sent == len(ids)
    assert set(states(tenant, ids)) == {"sent"}
    held = Counter(m["senderUniqueReference"] for m in held_by_dipsim(dipsim))
    assert all(held[reference] == 1 for reference in reference_of.values())
    # Requests were in flight together...
    overlapping = [
        (x, y) for x in requests for y in requests if x is not y and x[0] < y[1] and y[0] < x[1]
    ]
    assert overlapping
    # ... but never two carrying one business key.
    for x, y in overlapping:
        assert not {key_of[r] for r in x[2]} & {key_of[r] for r in y[2]}
    # Each key reached the DIP in its order.
    accepted = accepted_order(dipsim, set(reference_of.values()))
    for key in set(keys):
        mine = [reference_of[i] for i, k in zip(ids, keys, strict=True) if k == key]
        assert [r for r in accepted if r in mine] == mine
    # One evidence row per request, naming exactly its messages, committed whatever happened.
    with tenant_context(tenant):
        exchanges = list(
            DipExchange.objects.filter(sender_references__overlap=list(reference_of.values()))
        )
    assert report.requests == len(requests) == len(exchanges)
    assert sorted(x.sender_references for x in exchanges) == sorted(r[2] for r in requests)
    assert all(len(x.sender_references) <= 3 for x in exchanges)
    # The lost answer: recorded as maybe delivered, resent with the same references, counted
    # sent as the DIP's duplicate.
    [lost] = [x for x in exchanges if x.outcome == "maybe_delivered"]
    for reference in reference_of.values():
        carriers = sorted(
            (x for x in exchanges if reference in x.sender_references), key=lambda x: x.id
        )
        # A message goes again only after a request that did not end accepted: the lost one
        # (whose resend the DIP refuses as a duplicate) or, on a loaded machine, a transient
        # refusal retried. (Every message ended sent and held once by the DIP: above.)
        assert all(x.outcome != "accepted" for x in carriers[:-1]), [
            (x.id, x.outcome) for x in carriers
        ]
        if reference in lost.sender_references:
            assert carriers[0].id == lost.id
            assert len(carriers) >= 2
    with tenant_context(tenant):
        duplicates = set(
            Transition.objects.filter(
                message_id__in=ids, to_state="sent", detail__duplicate=True
            ).values_list("message_id", flat=True)
        )
    assert {reference_of[i] for i in duplicates} == set(lost.sender_references)
