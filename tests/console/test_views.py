"""The console shell: sign-in with throttling, tenant scoping and switching, HTMX fragments."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client

from core.models import AuditEvent
from core.tenancy import tenant_context
from tenants import services
from tenants.models import Role
from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def signed_in(username: str) -> Client:
    client = Client()
    response = client.post("/login/", {"username": username, "password": PASSWORD})
    assert response.status_code == 302, response.content
    return client


def test_alice_signs_in_and_sees_only_acme(world):
    page = signed_in("alice").get("/").content.decode()
    assert "Acme Energy Supply" in page
    assert "1000000001" in page
    assert "Globex" not in page
    assert "1000000002" not in page


def test_areas_need_a_signed_in_user(world):
    for path in ("/", "/flows/", "/messages/", "/settings/"):
        response = Client().get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")


def test_a_wrong_password_is_refused_and_recorded_as_the_persons_own_event(committed_db):
    from django.db import connections

    from tests.conftest import build_world

    world = build_world()
    response = Client().post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "do not match" in response.content.decode()
    Client().post("/login/", {"username": "mallory", "password": "guess"})
    # A sign-in belongs to the person, not to every tenant they are in: no tenant sees it...
    for tenant in (world.acme, world.globex):
        with tenant_context(tenant.id):
            assert not AuditEvent.objects.filter(action="login.failed").exists()
    # ...alice does, on her account page...
    page = signed_in("alice").get("/account/second-factor/").content.decode()
    assert "login.failed" in page
    # ...and provider support sees both, alice's tied to her account.
    with connections["support"].cursor() as cursor:
        cursor.execute(
            "SELECT actor, category, tenant_id IS NULL, actor_user_id IS NOT NULL"
            " FROM core_auditevent WHERE action = 'login.failed' ORDER BY actor"
        )
        assert cursor.fetchall() == [
            ("alice", "security", True, True),
            ("mallory", "security", True, False),
        ]


def test_repeated_failures_throttle_even_the_right_password(world):
    client = Client()
    for _ in range(3):
        client.post("/login/", {"username": "alice", "password": "wrong"})
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_charlie_cannot_switch_to_acme(world):
    client = signed_in("charlie")
    response = client.post("/tenant/switch/", {"tenant_id": str(world.acme.id)})
    assert response.status_code == 404
    page = client.get("/").content.decode()
    assert "Globex Smart Data" in page
    assert "Acme" not in page


def test_a_member_of_two_tenants_chooses_and_switches(world):
    with tenant_context(world.globex.id):
        services.add_member(user=world.alice.user, roles=[Role.VIEWER])
    client = signed_in("alice")
    choose = client.get("/")
    assert "Choose a tenant" in choose.content.decode()
    client.post("/tenant/switch/", {"tenant_id": str(world.globex.id)})
    page = client.get("/").content.decode()
    assert "1000000002" in page
    assert "1000000001" not in page
    client.post("/tenant/switch/", {"tenant_id": str(world.acme.id)})
    assert "1000000001" in client.get("/").content.decode()


def test_the_settings_page_serves_its_table_as_an_htmx_fragment(world):
    client = signed_in("alice")
    full = client.get("/settings/").content.decode()
    fragment = client.get("/settings/", HTTP_HX_REQUEST="true").content.decode()
    assert "<html" in full
    assert "<html" not in fragment
    assert fragment.strip().startswith('<table id="channel-table">')
    assert "IF-021" in fragment


def test_api_keys_are_listed_for_tenant_admins_only(world):
    with tenant_context(world.acme.id):
        services.issue_api_credential(name="billing-system", scopes=["read"], environment="UIT")
    assert "billing-system" in signed_in("alice").get("/settings/").content.decode()
    assert "billing-system" not in signed_in("bob").get("/settings/").content.decode()


def test_no_secret_reaches_the_page(world):
    page = signed_in("alice").get("/settings/").content.decode()
    assert "acme-dip-api-key-123" not in page
    assert "v1." not in page  # nor its ciphertext
    assert "…-123" in page  # only the hint


def test_sign_out_ends_the_session(world):
    client = signed_in("bob")
    client.post("/logout/")
    assert client.get("/").status_code == 302
