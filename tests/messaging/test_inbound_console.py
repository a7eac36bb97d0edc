"""The Settings page's DIP webhooks card: tenant and certificate admins ask a worker to register
a connection's webhooks; other roles cannot, and another tenant's connection is a 404."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.models import Message
from tenants import services
from tenants.models import Connection
from tests.console.test_settings import signed_in, text
from tests.messaging.inbound_helpers import BASE_URL, sup_connection


@pytest.fixture(autouse=True)
def _setup(settings):
    cache.clear()
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    yield
    cache.clear()


def _connection(tenant_id) -> Connection:
    with tenant_context(tenant_id):
        return Connection.objects.get()


def test_an_admin_asks_for_registration_and_a_worker_is_queued(
    world, dipsim, django_capture_on_commit_callbacks
):
    connection = sup_connection(world.acme.id, dipsim)
    alice = signed_in("alice")
    page = text(alice.get("/settings/"))
    assert "DIP webhooks" in page
    assert "never" in page
    with django_capture_on_commit_callbacks() as callbacks:
        response = alice.post(f"/settings/connections/{connection.pk}/webhooks/")
    assert response.status_code == 302
    assert len(callbacks) == 1  # the task is enqueued once the request's transaction commits
    with tenant_context(world.acme.id):
        assert AuditEvent.objects.filter(action="webhooks.registration_requested").count() == 1


def test_an_incomplete_credential_set_is_refused_at_once(world):
    connection = _connection(world.acme.id)
    alice = signed_in("alice")
    page = alice.post(f"/settings/connections/{connection.pk}/webhooks/", follow=True)
    assert "no active signing certificate" in text(page)


def test_an_operator_cannot_register_and_another_tenant_gets_404(world):
    connection = _connection(world.acme.id)
    assert (
        signed_in("bob").post(f"/settings/connections/{connection.pk}/webhooks/").status_code == 403
    )
    response = signed_in("charlie").post(f"/settings/connections/{connection.pk}/webhooks/")
    assert response.status_code == 404


@pytest.fixture
def processed(world):
    """Two acme messages pushed and processed: one normalised, one refused (wrong environment)."""
    from messaging.inbound import processing, receive
    from tests.messaging.inbound_helpers import (
        DipSigner,
        body_of,
        inbound_channel,
        pushed_if021,
        trust,
    )

    receive.forget_endpoints()
    channel = inbound_channel(world.acme.id)
    signer = DipSigner()
    trust(world.acme.id, channel.connection, signer.ca)
    url = f"{BASE_URL}/dip/webhooks/{channel.webhook_token}"
    good, bad = pushed_if021(mpan="1900012374324"), pushed_if021(environment="PRD")
    body = body_of(good, bad)
    answer = receive.receive_push(
        token=channel.webhook_token, url=url, headers=signer.headers(url, body), body=body
    )
    processing.process_delivery(tenant_id=world.acme.id, raw_id=answer.delivery_id)
    receive.forget_endpoints()
    with tenant_context(world.acme.id):
        ids = {m.transaction_id: m.id for m in Message.objects.all()}
    return good, bad, ids


def _txn(message):
    return message["payload"]["CommonBlock"]["D0"]["transactionID"]


def test_an_operator_finds_a_message_by_mpan_and_sees_everything_about_it(world, processed):
    good, bad, ids = processed
    bob = signed_in("bob")
    listing = text(bob.get("/messages/", {"q": "1900012374324"}))
    assert _txn(good) in listing
    assert _txn(bad) not in listing
    assert _txn(bad) in text(bob.get("/messages/", {"state": "invalid"}))
    assert _txn(good) not in text(bob.get("/messages/", {"interface": "IF-001"}))
    page = text(bob.get(f"/messages/{ids[_txn(good)]}/"))
    assert "normalised" in page
    assert "Signed by" in page
    assert "DIP signing" in page  # the signing certificate's subject
    assert "1900012374324" in page
    assert "Raw, exactly as received" in page
    assert "senderUniqueReference" in page  # the exact payload is shown to operators
    refused = text(bob.get(f"/messages/{ids[_txn(bad)]}/"))
    assert "CTX-ENVIRONMENT" in refused
    queue = text(bob.get("/exceptions/"))
    assert "CTX-ENVIRONMENT" in queue
    assert "market-operations" in queue


def test_content_is_for_content_roles_and_other_tenants_see_nothing(world, processed):
    good, _bad, ids = processed
    alice = signed_in("alice")  # tenant and certificate admin: metadata, not content
    page = text(alice.get(f"/messages/{ids[_txn(good)]}/"))
    assert "Timeline" in page
    assert "senderUniqueReference" not in page
    charlie = signed_in("charlie")
    assert charlie.get(f"/messages/{ids[_txn(good)]}/").status_code == 404
    assert _txn(good) not in text(charlie.get("/messages/"))
    assert "CTX-ENVIRONMENT" not in text(charlie.get("/exceptions/"))


def test_the_api_offers_the_same_reads(world, processed):
    from rest_framework.test import APIClient

    good, bad, ids = processed
    with tenant_context(world.acme.id):
        acme_key = services.issue_api_credential(name="crm", scopes=["read"], environment="UIT").key
    with tenant_context(world.globex.id):
        globex_key = services.issue_api_credential(
            name="crm", scopes=["read"], environment="UIT"
        ).key
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {acme_key}")
    found = api.get("/api/v1/messages/", {"q": _txn(good)}).json()
    assert [m["transaction_id"] for m in found] == [_txn(good)]
    detail = api.get(f"/api/v1/messages/{ids[_txn(good)]}/").json()
    assert [t["to"] for t in detail["timeline"]] == ["valid", "normalised"]
    assert detail["signed_by"]["subject"]
    assert '"MPANCore": "1900012374324"' in detail["raw"]
    assert detail["events"]
    [exception] = api.get("/api/v1/exceptions/").json()
    assert exception["transaction_id"] == _txn(bad)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {globex_key}")
    assert other.get(f"/api/v1/messages/{ids[_txn(good)]}/").status_code == 404
    assert other.get("/api/v1/messages/").json() == []
