"""Certificate housekeeping across tenants: the beat fan-out and the days-left metric."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.test import Client

from core.tenancy import tenant_context
from tenants import certificates, tasks
from tenants.models import Connection, Notification
from tests.conftest import build_world
from tests.pki import TestCA, key_pem, new_key, pem
from tests.redis_keys import purge_queue, queue_length


def install_expiring(ca: TestCA, tenant_id: object, *, days: int) -> None:
    now = datetime.now(UTC)
    key = new_key()
    cert = ca.issue(
        key.public_key(), not_before=now - timedelta(days=1), not_after=now + timedelta(days=days)
    )
    with tenant_context(tenant_id):
        staged = certificates.import_certificate(
            connection=Connection.objects.get(),
            purpose="signing",
            data=pem(cert) + key_pem(key),
            actor="pytest",
        )
        certificates.activate_first_certificate(certificate=staged, actor="pytest")


def test_the_hourly_task_visits_every_tenant_and_warns_each_only_about_its_own(committed_db):
    world = build_world()
    ca = TestCA.create()
    install_expiring(ca, world.acme.id, days=20)
    install_expiring(ca, world.globex.id, days=200)
    purge_queue("maintenance")
    assert tasks.certificate_maintenance_task.apply().get() == 2
    assert queue_length("maintenance") == 2  # one task per tenant, on the maintenance queue
    purge_queue("maintenance")
    # Run the per-tenant tasks as the maintenance worker would.
    for tenant_id in (world.acme.id, world.globex.id):
        tasks.certificate_maintenance_for_tenant_task.apply(args=[str(tenant_id)]).get()
    with tenant_context(world.acme.id):
        assert [n.level for n in Notification.objects.all()] == ["warning"]
    with tenant_context(world.globex.id):
        assert Notification.objects.count() == 0
    # A second run within the interval warns nobody again.
    tasks.certificate_maintenance_for_tenant_task.apply(args=[str(world.acme.id)]).get()
    with tenant_context(world.acme.id):
        assert Notification.objects.count() == 1


def test_days_left_is_a_prometheus_gauge_per_certificate(committed_db, settings):
    settings.BUSBAR_METRICS_TOKEN = "scraper-token-for-tests"
    world = build_world()
    ca = TestCA.create()
    install_expiring(ca, world.acme.id, days=20)
    install_expiring(ca, world.globex.id, days=200)
    # Without the token nothing is served: no slug, no connection, no fingerprint.
    for headers in ({}, {"HTTP_AUTHORIZATION": "Bearer wrong-token"}):
        anonymous = Client().get("/metrics", **headers)
        assert anonymous.status_code == 401
        assert b"acme" not in anonymous.content
        assert b"busbar_certificate" not in anonymous.content
    scraped = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scraper-token-for-tests")
    assert scraped.status_code == 200
    lines = [
        line
        for line in scraped.content.decode().splitlines()
        if line.startswith("busbar_certificate_days_left{")
    ]
    assert len(lines) == 2
    acme = next(line for line in lines if 'tenant="acme"' in line)
    assert 'purpose="signing"' in acme
    assert 'status="active"' in acme
    assert 19.9 < float(acme.rsplit(" ", 1)[1]) <= 20
