"""The Settings page's DIP webhooks card: tenant and certificate admins ask a worker to register
a connection's webhooks; other roles cannot, and another tenant's connection is a 404."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from core.models import AuditEvent
from core.tenancy import tenant_context
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
