"""Provider support's page: every tenant's metadata at a glance, only for verified staff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY

from core.models import TOTPSecondFactor
from core.tenancy import tenant_context
from tenants import certificates
from tenants.models import Connection
from tests.conftest import PASSWORD, build_world
from tests.pki import TestCA, key_pem, new_key, pem


def staff_client(*, verified: bool) -> Client:
    sam = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    sam.groups.add(Group.objects.get_or_create(name="provider_support")[0])
    client = Client()
    client.force_login(sam)
    if verified:
        device = TOTPSecondFactor.new_for(sam)
        device.confirmed = True
        device.save()
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return client


def test_support_sees_every_tenants_health_and_security_events(committed_db):
    world = build_world()
    ca = TestCA.create()
    key = new_key()
    now = datetime.now(UTC)
    with tenant_context(world.acme.id):
        staged = certificates.import_certificate(
            connection=Connection.objects.get(),
            purpose="signing",
            data=pem(
                ca.issue(
                    key.public_key(),
                    not_before=now - timedelta(days=1),
                    not_after=now + timedelta(days=9),
                )
            )
            + key_pem(key),
            actor="pytest",
        )
        certificates.activate_first_certificate(certificate=staged, actor="pytest")
    Client().post("/login/", {"username": "charlie", "password": "wrong"})
    page = staff_client(verified=True).get("/support/").content.decode()
    assert "Acme Energy Supply" in page
    assert "Globex Smart Data" in page
    assert "expiry-critical" in page  # acme's key expires in 9 days
    assert "login.failed" in page
    assert '<span class="error">1</span>' in page  # globex's failed sign-in, counted
    assert "acme-dip-api-key" not in page


def test_support_needs_a_verified_second_factor(committed_db):
    build_world()
    response = staff_client(verified=False).get("/support/")
    assert response.status_code == 302
    assert response["Location"] == "/account/second-factor/"


def test_tenant_users_cannot_find_the_support_page(committed_db):
    build_world()
    alice = Client()
    alice.post("/login/", {"username": "alice", "password": PASSWORD})
    assert alice.get("/support/").status_code == 404
