"""Webhook registration against a real dipsim: one callback per inbound channel and one for
status messages, each a signed mTLS request recorded as evidence."""

from __future__ import annotations

import httpx
import pytest

from core.models import AuditEvent
from core.tenancy import tenant_context
from messaging.inbound import registration
from messaging.models import DipExchange
from tenants import services
from tenants.certificates import CertificateError
from tenants.models import Connection
from tests.messaging.conftest import SUP_DIP_ID
from tests.messaging.inbound_helpers import BASE_URL, sup_connection


@pytest.fixture
def base_url(settings):
    settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
    return BASE_URL


def test_it_registers_every_inbound_channel_and_the_status_webhook_with_the_dip(
    committed_world, dipsim, base_url
):
    # committed: each call's evidence commits on a connection of its own (messaging.exchanges),
    # which must see the connection this test creates
    world = committed_world
    connection = sup_connection(world.acme.id, dipsim)
    with tenant_context(world.acme.id):
        services.create_channel(connection=connection, interface_id="IF-036", direction="inbound")
        services.create_channel(connection=connection, interface_id="IF-031", direction="outbound")
        outcomes = registration.register_webhooks(connection=connection, actor="pytest")
        channels = {c.interface_id: c for c in registration.inbound_channels(connection=connection)}
        exchanges = list(DipExchange.objects.filter(operation="webhook"))
        event = AuditEvent.objects.get(action="webhooks.registered")

    assert [(o.target, o.ok, o.status) for o in outcomes] == [
        ("IF-021", True, 201),
        ("IF-036", True, 201),
        ("status", True, 201),
    ]
    assert sorted(e.interface_id for e in exchanges) == ["", "IF-021", "IF-036"]
    assert all(e.http_status == 201 and e.signing_certificate_fingerprint for e in exchanges)
    assert len(event.detail["results"]) == 3

    held = {
        (w["channel"], w["recipient"]): w["url"]
        for w in httpx.get(f"{dipsim.admin_url}/admin/webhooks").json()
    }
    assert (
        held[("IF-021", SUP_DIP_ID)]
        == f"{base_url}/dip/webhooks/{channels['IF-021'].webhook_token}"
    )
    assert held[("IF-036", SUP_DIP_ID)].endswith(channels["IF-036"].webhook_token)
    status_url = next(url for (ch, r), url in held.items() if ch not in {"IF-021", "IF-036"})
    token = status_url.split("/dip/webhooks/status/")[1]
    assert registration.resolve_status_token(token) == (str(world.acme.id), connection.pk)
    assert ("IF-031", SUP_DIP_ID) not in held  # outbound channels get no callback


def test_a_status_token_cannot_be_forged_for_another_connection(world):
    token = registration.status_webhook_token(tenant_id=world.acme.id, connection_id=7)
    tenant, _connection, mac = token.split("/")
    assert registration.resolve_status_token(token) == (str(world.acme.id), 7)
    assert registration.resolve_status_token(f"{world.globex.id}/7/{mac}") is None
    assert registration.resolve_status_token(f"{tenant}/8/{mac}") is None
    assert registration.resolve_status_token("not/a/token") is None


def test_registration_is_refused_up_front_without_credentials_or_base_url(world, settings):
    settings.BUSBAR_WEBHOOK_BASE_URL = ""
    with tenant_context(world.acme.id):
        connection = Connection.objects.get()
        with pytest.raises(registration.RegistrationError, match="BUSBAR_WEBHOOK_BASE_URL"):
            registration.request_webhook_registration(connection=connection, actor="alice")
        settings.BUSBAR_WEBHOOK_BASE_URL = BASE_URL
        with pytest.raises(CertificateError, match="no active signing certificate"):
            registration.request_webhook_registration(connection=connection, actor="alice")
        assert not AuditEvent.objects.filter(action="webhooks.registration_requested").exists()


def test_a_dip_that_refuses_is_recorded_as_a_failed_registration(committed_world, dipsim, base_url):
    world = committed_world
    connection = sup_connection(world.acme.id, dipsim)
    with tenant_context(world.acme.id):
        # A key dipsim does not know: every call is refused (401), and each refusal is evidence.
        services.update_connection(connection=connection, api_key="wrong-key", actor="t")
        outcomes = registration.register_webhooks(connection=connection, actor="pytest")
        assert AuditEvent.objects.filter(action="webhooks.registration_failed").exists()
        statuses = list(
            DipExchange.objects.filter(operation="webhook").values_list("http_status", flat=True)
        )
    assert [o.ok for o in outcomes] == [False, False]
    assert statuses == [401, 401]
