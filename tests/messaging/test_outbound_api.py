"""The submission API: scopes, tenant isolation, every problem named with nothing stored,
Idempotency-Key (same/same, same/other, concurrent), and the message read back with its
attempts and timeline after a real send to dipsim."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from messaging import tasks
from messaging.models import IdempotencyKey, Message
from messaging.outbound import api as outbound_api
from messaging.outbound import idempotency
from tenants import services
from tests.messaging.test_outbound import outbound_channel, run_pipeline, submission


@pytest.fixture
def enqueued(monkeypatch) -> list[tuple[Any, ...]]:
    """The prepare task's enqueues, recorded instead of published (the tests run the pipeline
    themselves, so no broker message outlives a test)."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(tasks.prepare_outbound_task, "delay", lambda *args: calls.append(args))
    return calls


@pytest.fixture
def api(committed_world, dipsim, enqueued):
    world = committed_world
    channel = outbound_channel(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        submit = services.issue_api_credential(name="crm", scopes=["submit"], environment="UIT")
        read_only = services.issue_api_credential(name="bi", scopes=["read"], environment="UIT")
    with tenant_context(world.acme.id):
        acme = services.issue_api_credential(
            name="billing", scopes=["submit", "read"], environment="UIT"
        )
    return {
        "world": world,
        "channel": channel,
        "submit": submit.key,
        "read": read_only.key,
        "acme": acme.key,
        "enqueued": enqueued,
    }


def client(key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return api


def url(api: dict[str, Any], batch: bool = False) -> str:
    return f"/api/v1/channels/{api['channel'].id}/messages/" + ("batch/" if batch else "")


def stored(api: dict[str, Any]) -> int:
    with tenant_context(api["world"].globex.id):
        return Message.objects.count()


def test_a_submission_is_accepted_sent_and_read_back_with_attempts_and_timeline(api):
    response = client(api["submit"]).post(url(api), submission(), format="json")
    assert response.status_code == 201, response.content
    [accepted] = response.json()["messages"]
    assert accepted["state"] == "accepted"
    assert api["enqueued"] == [(str(api["world"].globex.id), [accepted["id"]])]

    report = run_pipeline(api["world"].globex.id, [accepted["id"]])
    assert report.sent == 1
    detail = client(api["submit"]).get(accepted["url"])
    assert detail.status_code == 200
    body = detail.json()
    assert body["state"] == "sent"
    assert body["transaction_id"].startswith("T-IF-021-")
    [attempt] = body["exchanges"]
    assert attempt["http_status"] == 201
    assert len(attempt["signing_certificate_fingerprint"]) == 64
    assert len(attempt["mtls_certificate_fingerprint"]) == 64
    assert [t["to_state"] for t in body["timeline"]] == ["ready", "sending", "sent"]
    # A read-only key reads it too; another tenant's key gets a 404 like a missing message.
    assert client(api["read"]).get(accepted["url"]).status_code == 200
    assert client(api["acme"]).get(accepted["url"]).status_code == 404
    assert client(api["acme"]).post(url(api), submission(), format="json").status_code == 404


def test_a_read_only_key_cannot_submit(api):
    response = client(api["read"]).post(url(api), submission(), format="json")
    assert response.status_code == 403
    assert stored(api) == 0


def test_a_batch_with_problems_lists_every_one_with_its_path_and_stores_nothing(api):
    bad = submission(mpan="123", gsp_group_id="_Z")
    del bad["custom_block"]
    response = client(api["submit"]).post(
        url(api, batch=True), {"messages": [submission(), bad, {"colour": 1}]}, format="json"
    )
    assert response.status_code == 400
    paths = [e["path"] for e in response.json()["errors"]]
    assert paths == [
        "$.messages[1].custom_block",
        "$.messages[1].mpan",
        "$.messages[1].gsp_group_id",
        "$.messages[2].colour",
        "$.messages[2].event_code",
        "$.messages[2].custom_block",
    ]
    assert stored(api) == 0
    assert api["enqueued"] == []


def test_a_batch_is_stored_whole(api):
    response = client(api["submit"]).post(
        url(api, batch=True), {"messages": [submission() for _ in range(5)]}, format="json"
    )
    assert response.status_code == 201
    assert len(response.json()["messages"]) == 5
    assert stored(api) == 5


def test_the_same_key_and_body_returns_the_original_answer_and_stores_once(api):
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-1"}
    body = submission()
    first = client(api["submit"]).post(url(api), body, format="json", **headers)
    again = client(api["submit"]).post(url(api), body, format="json", **headers)
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert stored(api) == 1
    assert len(api["enqueued"]) == 1


def test_the_same_key_with_another_body_is_a_422_naming_the_conflict(api):
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-2"}
    assert (
        client(api["submit"]).post(url(api), submission(), format="json", **headers).status_code
        == 201
    )
    other = client(api["submit"]).post(
        url(api), submission(correlation_id="CI-other"), format="json", **headers
    )
    assert other.status_code == 422
    assert "order-2" in other.json()["detail"]
    assert "different body" in other.json()["detail"]
    assert stored(api) == 1


def test_a_refused_request_keeps_no_key_so_the_corrected_one_goes_through(api):
    headers = {"HTTP_IDEMPOTENCY_KEY": "order-3"}
    bad = client(api["submit"]).post(url(api), {"event_code": "x"}, format="json", **headers)
    assert bad.status_code == 400
    with tenant_context(api["world"].globex.id):
        assert not IdempotencyKey.objects.exists()
    good = client(api["submit"]).post(url(api), submission(), format="json", **headers)
    assert good.status_code == 201


def _concurrently(api: dict[str, Any], monkeypatch, *, hold: float) -> list[Any]:
    """Two requests with one key; the first holds its transaction for ``hold`` seconds."""
    real = outbound_api.submit_messages
    started = threading.Event()

    def slow(**kwargs: Any) -> list[int]:
        started.set()
        time.sleep(hold)
        return real(**kwargs)

    monkeypatch.setattr(outbound_api, "submit_messages", slow)
    body = submission()
    results: list[Any] = [None, None]

    def post(slot: int) -> None:
        from django.db import connections

        try:
            results[slot] = client(api["submit"]).post(
                url(api), body, format="json", HTTP_IDEMPOTENCY_KEY="order-4"
            )
        finally:
            connections.close_all()

    first = threading.Thread(target=post, args=(0,))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=post, args=(1,))
    second.start()
    first.join(30)
    second.join(30)
    return results


def test_a_concurrent_request_with_the_same_key_waits_for_the_first_and_gets_its_answer(
    api, monkeypatch
):
    first, second = _concurrently(api, monkeypatch, hold=1.0)
    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert stored(api) == 1


def test_a_concurrent_request_that_waits_too_long_gets_a_409(api, monkeypatch):
    monkeypatch.setattr(idempotency, "WAIT", "300ms")
    first, second = _concurrently(api, monkeypatch, hold=2.0)
    assert (first.status_code, second.status_code) == (201, 409)
    assert "still being processed" in second.json()["detail"]
    assert stored(api) == 1


def test_the_submission_endpoints_are_in_the_openapi_document(api):
    schema = client(api["read"]).get("/api/v1/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/channels/{channel_id}/messages/" in paths
    assert "/api/v1/channels/{channel_id}/messages/batch/" in paths
    assert "/api/v1/messages/{message_id}/" in paths
    operation = paths["/api/v1/channels/{channel_id}/messages/"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"])
