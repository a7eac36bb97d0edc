"""The pull API: the cursor-ordered feed, acknowledgement by cursor, and tenant isolation."""

from __future__ import annotations

import datetime as dt
import random
import threading

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from dipsim import messages as dip
from messaging.events import endpoints, services
from messaging.events.mappings import EventType
from messaging.inbound import processing, receive
from tenants import services as tenant_services
from tests.conftest import build_world
from tests.messaging.inbound_helpers import (
    BASE_URL,
    DipSigner,
    body_of,
    inbound_channel,
    pushed_if021,
    trust,
)


@pytest.fixture
def world(committed_db):
    # Committed, because the feed shows only what committed transactions wrote.
    return build_world()


@pytest.fixture
def keys(world):
    with tenant_context(world.acme.id):
        acme = tenant_services.issue_api_credential(name="b", scopes=["read"], environment="UIT")
        submit = tenant_services.issue_api_credential(
            name="s", scopes=["submit"], environment="UIT"
        )
    with tenant_context(world.globex.id):
        globex = tenant_services.issue_api_credential(name="c", scopes=["read"], environment="UIT")
    return {"acme": acme.key, "globex": globex.key, "acme_submit": submit.key}


def api(key: str | None) -> APIClient:
    client = APIClient()
    if key:
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def if021(seed: int) -> dict:
    rng = random.Random(seed)
    return dip.if021(
        sender="1000000002", mpan=dip.make_mpan(rng), day=dt.date(2026, 11, 1), rng=rng
    )


def publish(tenant_id, n: int) -> None:
    services.publish_event(
        tenant_id=tenant_id, type=EventType.OUTBOUND_STATE_CHANGED, payload={"n": n}
    )


def test_a_client_pages_through_its_events_with_a_cursor(world, keys):
    services.record_events(tenant_id=world.acme.id, messages=[(n, if021(n)) for n in range(1, 4)])
    for n in range(2):
        publish(world.acme.id, n)
    first = api(keys["acme"]).get("/api/v1/events/", {"limit": 2})
    assert first.status_code == 200
    body = first.json()
    assert [e["type"] for e in body["events"]] == [EventType.CONSUMPTION_RECORDED] * 2
    assert body["has_more"] is True
    assert body["events"][0]["source_message_id"] == 1
    assert body["events"][0]["mapping"] == "consumption@2"
    assert body["events"][0]["id"].startswith("evt_")
    seen = [e["id"] for e in body["events"]]
    cursor = body["next_cursor"]
    while True:
        page = api(keys["acme"]).get("/api/v1/events/", {"after": cursor, "limit": 2}).json()
        seen += [e["id"] for e in page["events"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen)) == 5
    # The cursor is stable: asking again with an acknowledged cursor gives the same page.
    again = api(keys["acme"]).get("/api/v1/events/", {"after": body["next_cursor"], "limit": 2})
    assert [e["id"] for e in again.json()["events"]] == seen[2:4]
    # At the end the cursor stays put until something new arrives.
    end = api(keys["acme"]).get("/api/v1/events/", {"after": page["next_cursor"]}).json()
    assert (end["events"], end["next_cursor"], end["has_more"]) == ([], page["next_cursor"], False)
    publish(world.acme.id, 9)
    fresh = api(keys["acme"]).get("/api/v1/events/", {"after": page["next_cursor"]}).json()
    assert [e["data"] for e in fresh["events"]] == [{"n": 9}]


def test_the_feed_filters_by_type_and_still_moves_the_cursor(world, keys):
    services.record_events(tenant_id=world.acme.id, messages=[(1, if021(1))])
    publish(world.acme.id, 1)
    body = api(keys["acme"]).get("/api/v1/events/", {"type": EventType.OUTBOUND_STATE_CHANGED})
    assert [e["type"] for e in body.json()["events"]] == [EventType.OUTBOUND_STATE_CHANGED]
    bad = api(keys["acme"]).get("/api/v1/events/", {"type": "nope"})
    assert bad.status_code == 400
    assert "type" in bad.json()["errors"]


def test_an_event_committed_late_is_not_skipped_by_a_cursor(world, keys):
    """A writer that took its place in the feed first but commits last must not land behind a
    cursor: the next writer of the same tenant waits for it, another tenant's does not."""
    holding, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                services.publish_event(
                    tenant_id=world.acme.id,
                    type=EventType.OUTBOUND_STATE_CHANGED,
                    payload={},
                    source="slow",
                )
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def later_writer(tenant_id, name: str) -> None:
        try:
            services.publish_event(
                tenant_id=tenant_id, type=EventType.OUTBOUND_STATE_CHANGED, payload={}, source=name
            )
            results[name] = True
        finally:
            connection.close()

    slow = threading.Thread(target=slow_writer)
    slow.start()
    assert holding.wait(10)
    later = threading.Thread(target=later_writer, args=(world.acme.id, "later"))
    other = threading.Thread(target=later_writer, args=(world.globex.id, "globex"))
    later.start()
    other.start()
    other.join(10)
    assert results.get("globex") is True  # another tenant never waits
    later.join(0.5)
    assert later.is_alive()  # acme's next writer waits its turn
    assert api(keys["acme"]).get("/api/v1/events/").json()["events"] == []
    release.set()
    slow.join(10)
    later.join(10)
    body = api(keys["acme"]).get("/api/v1/events/").json()
    assert [e["source"] for e in body["events"]] == ["slow", "later"]


def test_a_cursor_is_bound_to_its_tenant_and_a_bad_one_is_refused(world, keys):
    publish(world.acme.id, 1)
    publish(world.globex.id, 1)
    acme_cursor = api(keys["acme"]).get("/api/v1/events/").json()["next_cursor"]
    response = api(keys["globex"]).get("/api/v1/events/", {"after": acme_cursor})
    assert response.status_code == 400
    assert response.json()["errors"]["after"] == [
        "this cursor was not issued by this tenant's event feed"
    ]
    assert api(keys["acme"]).get("/api/v1/events/", {"after": "garbage"}).status_code == 400
    assert api(keys["acme"]).get("/api/v1/events/", {"limit": 0}).status_code == 400
    assert api(keys["acme"]).get("/api/v1/events/", {"limit": 501}).status_code == 400


def test_charlie_gets_a_404_for_acmes_event(world, keys):
    publish(world.acme.id, 1)
    [event] = api(keys["acme"]).get("/api/v1/events/").json()["events"]
    detail = api(keys["acme"]).get(f"/api/v1/events/{event['id']}/").json()
    assert detail == {**event, "deliveries": []}
    assert api(keys["globex"]).get(f"/api/v1/events/{event['id']}/").status_code == 404
    assert api(keys["globex"]).get("/api/v1/events/").json()["events"] == []
    assert api(keys["acme"]).get("/api/v1/events/evt_nothex/").status_code == 404


def test_the_feed_needs_a_key_with_the_read_scope(world, keys):
    assert api(None).get("/api/v1/events/").status_code in {401, 403}
    assert api(keys["acme_submit"]).get("/api/v1/events/").status_code == 403


def test_the_feed_is_in_the_openapi_document(world):
    schema = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/events/"]["get"]
    assert operation["operationId"] == "events_list"
    assert {p["name"] for p in operation["parameters"]} >= {"after", "limit", "type"}
    assert "/api/v1/events/{event_id}/" in schema["paths"]


def test_an_events_detail_says_where_it_went(world, keys, settings):
    settings.BUSBAR_DOWNSTREAM_ALLOW = "127.0.0.1:9"
    with tenant_context(world.acme.id):
        endpoints.create_endpoint(
            name="ledger", url="http://127.0.0.1:9/hooks", event_types=["*"], actor="pytest"
        )
    publish(world.acme.id, 1)
    [event] = api(keys["acme"]).get("/api/v1/events/").json()["events"]
    detail = api(keys["acme"]).get(f"/api/v1/events/{event['id']}/").json()
    assert detail["deliveries"] == [
        {
            "endpoint": "ledger",
            "state": "pending",
            "attempts": 0,
            "delivered_at": None,
            "last_status": None,
            "last_error": "",
        }
    ]


def test_an_inbound_round_that_normalises_behind_a_late_committer_lands_after_it(
    world, keys, settings
):
    """A round's normalisation waits for a writer that took its place in the feed first: the
    round's events land after that writer's, never behind a cursor that already passed it."""
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    receive.forget_endpoints()
    channel = inbound_channel(world.acme.id)
    signer = DipSigner()
    trust(world.acme.id, channel.connection, signer.ca)
    url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"
    body = body_of(pushed_if021(), pushed_if021())
    answer = receive.receive_push(
        token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body
    )
    assert answer.status == 201, answer.body
    assert answer.delivery_id is not None
    ids = processing.delivery_message_ids(tenant_id=world.acme.id, raw_id=answer.delivery_id)
    claimed, _ = processing.claim(tenant_id=world.acme.id, message_ids=ids)
    validated = processing.validate_messages(tenant_id=world.acme.id, message_ids=claimed)
    assert sorted(validated.valid) == sorted(ids)
    assert set(validated.elements) == set(ids)  # parsed once, handed on to normalisation

    holding, release = threading.Event(), threading.Event()
    normalised: list[int] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                services.publish_event(
                    tenant_id=world.acme.id,
                    type=EventType.OUTBOUND_STATE_CHANGED,
                    payload={},
                    source="slow",
                )
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def round_normalising() -> None:
        try:
            normalised.extend(
                processing.normalise(
                    tenant_id=world.acme.id, message_ids=ids, elements=validated.elements
                )
            )
        finally:
            connection.close()

    slow = threading.Thread(target=slow_writer)
    slow.start()
    assert holding.wait(10)
    waiting = threading.Thread(target=round_normalising)
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # the round waits for the writer ahead of it
    assert api(keys["acme"]).get("/api/v1/events/").json()["events"] == []
    release.set()
    slow.join(10)
    waiting.join(10)
    assert sorted(normalised) == sorted(ids)
    feed = api(keys["acme"]).get("/api/v1/events/").json()["events"]
    assert [(e["type"], e["source_message_id"]) for e in feed] == [
        (EventType.OUTBOUND_STATE_CHANGED, None),
        *[(EventType.CONSUMPTION_RECORDED, i) for i in sorted(ids)],
    ]
    assert feed[0]["source"] == "slow"
    receive.forget_endpoints()
