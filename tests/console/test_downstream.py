"""The Downstream page: endpoints with their delivery health; tenant admins add, rotate, disable."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from standardwebhooks import Webhook

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.events import endpoints
from messaging.events.models import Delivery, DeliveryAttempt
from messaging.events.services import publish_event
from tenants.models import DownstreamEndpoint
from tests.conftest import PASSWORD

ALLOW = "127.0.0.1:8701"


@pytest.fixture(autouse=True)
def _setup(settings):
    cache.clear()
    settings.BUSBAR_DOWNSTREAM_ALLOW = ALLOW
    yield
    cache.clear()


def signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def secret_on(page) -> str:
    return (
        page.content.decode().split('data-testid="signing-secret" class="secret">')[1].split("<")[0]
    )


def add(client: Client, **overrides):
    data = {
        "name": "acme-ledger",
        "url": f"http://{ALLOW}/hooks",
        "event_types": ["*"],
        **overrides,
    }
    return client.post("/downstream/add/", data)


def test_alice_adds_an_endpoint_and_sees_its_secret_once(world):
    alice = signed_in("alice")
    page = add(alice)
    assert page.status_code == 200
    assert page["Cache-Control"].startswith("max-age=0")
    secret = secret_on(page)
    with tenant_context(world.acme.id):
        endpoint = DownstreamEndpoint.objects.get()
        assert endpoints.signing_secrets(endpoint_id=endpoint.id) == [secret]
        assert AuditEvent.objects.filter(action="downstream_endpoint.created").exists()
    listing = alice.get("/downstream/").content.decode()
    assert "acme-ledger" in listing
    assert secret not in listing


def test_a_private_address_is_refused_with_the_reason(world):
    alice = signed_in("alice")
    response = add(alice, url="http://169.254.169.254/latest/meta-data/")
    assert response.status_code == 302
    page = alice.get("/downstream/").content.decode()
    assert "private, loopback or link-local" in page
    with tenant_context(world.acme.id):
        assert not DownstreamEndpoint.objects.exists()


def test_the_page_shows_success_rate_backlog_circuit_and_last_failure(world):
    with tenant_context(world.acme.id):
        endpoint = endpoints.create_endpoint(
            name="billing", url=f"http://{ALLOW}/hooks", event_types=["*"], actor="pytest"
        ).endpoint
    publish_event(tenant_id=world.acme.id, type="outbound.state_changed", payload={})
    with tenant_context(world.acme.id):
        delivery = Delivery.objects.get()
        for n, ok in enumerate([True, True, True, False], start=1):
            DeliveryAttempt.objects.create(
                delivery=delivery, endpoint=endpoint, attempt=n, started_at=timezone.now(), ok=ok
            )
        DownstreamEndpoint.objects.update(
            circuit_state="open", last_failure_at=timezone.now(), last_failure="HTTP 503: busy"
        )
    page = signed_in("bob").get("/downstream/").content.decode()
    assert "75% of 4" in page
    assert "1 pending" in page
    assert "Open (paused after repeated failures)" in page
    assert "HTTP 503: busy" in page
    assert "Rotate secret" not in page  # bob is not a tenant admin
    fragment = signed_in("bob").get("/downstream/", HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<table id="endpoint-table">')


def test_rotation_shows_a_new_secret_and_both_sign_during_the_overlap(world):
    alice = signed_in("alice")
    old = secret_on(add(alice))
    with tenant_context(world.acme.id):
        endpoint = DownstreamEndpoint.objects.get()
    new = secret_on(alice.post(f"/downstream/{endpoint.id}/rotate/"))
    assert new != old
    with tenant_context(world.acme.id):
        assert set(endpoints.signing_secrets(endpoint_id=endpoint.id)) == {old, new}
    from messaging.events.signing import signature_headers

    headers = signature_headers(
        secrets=[new, old],
        webhook_id="evt_1",
        timestamp=int(timezone.now().timestamp()),
        body=b"{}",
    )
    Webhook(old).verify(b"{}", headers)
    Webhook(new).verify(b"{}", headers)


def test_disabling_and_enabling(world):
    alice = signed_in("alice")
    add(alice)
    with tenant_context(world.acme.id):
        endpoint = DownstreamEndpoint.objects.get()
    alice.post(f"/downstream/{endpoint.id}/enable/", {"enabled": "0"})
    with tenant_context(world.acme.id):
        assert DownstreamEndpoint.objects.get().enabled is False
    assert "disabled" in alice.get("/downstream/").content.decode()
    alice.post(f"/downstream/{endpoint.id}/enable/", {"enabled": "1"})
    with tenant_context(world.acme.id):
        assert DownstreamEndpoint.objects.get().enabled is True


def test_only_tenant_admins_act(world):
    add(signed_in("alice"))
    with tenant_context(world.acme.id):
        endpoint = DownstreamEndpoint.objects.get()
    bob = signed_in("bob")
    assert bob.post(f"/downstream/{endpoint.id}/rotate/").status_code == 403
    assert bob.post(f"/downstream/{endpoint.id}/enable/", {"enabled": "0"}).status_code == 403
    assert add(bob, name="mine").status_code == 403


def test_charlie_gets_a_404_for_acmes_endpoint(world):
    add(signed_in("alice"))
    with tenant_context(world.acme.id):
        endpoint = DownstreamEndpoint.objects.get()
    charlie = signed_in("charlie")  # globex's tenant admin
    assert charlie.post(f"/downstream/{endpoint.id}/rotate/").status_code == 404
    assert charlie.post(f"/downstream/{endpoint.id}/enable/", {"enabled": "0"}).status_code == 404
    assert "acme-ledger" not in charlie.get("/downstream/").content.decode()
    with tenant_context(world.acme.id):
        assert DownstreamEndpoint.objects.get().enabled is True
