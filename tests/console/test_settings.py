"""Tenant admins manage members and API keys from Settings; auditors read the activity log."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from rest_framework.test import APIClient

from console.templatetags.durations import cadence
from core.tenancy import tenant_context
from tenants import services
from tenants.models import ApiCredential, Channel, Membership
from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def signed_in(username: str, password: str = PASSWORD) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": password}).status_code == 302
    return client


def text(response) -> str:
    return response.content.decode()


def test_an_issued_api_key_is_shown_once_works_and_can_be_revoked(world):
    alice = signed_in("alice")
    page = alice.post(
        "/settings/api-keys/", {"name": "billing", "scopes": ["read"], "environment": "UIT"}
    )
    assert page["Cache-Control"].startswith("max-age=0")
    key = text(page).split('data-testid="api-key" class="secret">')[1].split("<")[0]
    assert key.startswith("bb_")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert api.get("/api/v1/identities/").status_code == 200
    settings_page = text(alice.get("/settings/"))
    assert "billing" in settings_page
    assert key not in settings_page  # never shown again
    with tenant_context(world.acme.id):
        credential = ApiCredential.objects.get(name="billing")
    alice.post(f"/settings/api-keys/{credential.id}/revoke/")
    assert api.get("/api/v1/identities/").status_code == 401


def test_only_tenant_admins_manage_members_and_keys(world):
    bob = signed_in("bob")
    assert "Invite a member" in text(signed_in("alice").get("/settings/"))
    assert "Invite a member" not in text(bob.get("/settings/"))
    response = bob.post(
        "/settings/api-keys/", {"name": "x", "scopes": ["read"], "environment": "UIT"}
    )
    assert response.status_code == 403
    assert (
        bob.post("/settings/members/", {"username": "eve", "roles": ["viewer"]}).status_code == 403
    )


def test_roles_change_and_the_last_tenant_admin_is_kept(world):
    alice = signed_in("alice")
    with tenant_context(world.acme.id):
        bob = Membership.objects.get(user=world.bob.user)
        mine = Membership.objects.get(user=world.alice.user)
    alice.post(f"/settings/members/{bob.id}/roles/", {"roles": ["viewer", "approver"]})
    with tenant_context(world.acme.id):
        bob.refresh_from_db()
    assert bob.roles == ["approver", "viewer"]
    refused = alice.post(f"/settings/members/{mine.id}/roles/", {"roles": ["viewer"]}, follow=True)
    assert "at least one tenant admin" in text(refused)
    removed = alice.post(f"/settings/members/{mine.id}/remove/", follow=True)
    assert "at least one tenant admin" in text(removed)
    alice.post(f"/settings/members/{bob.id}/remove/")
    with tenant_context(world.acme.id):
        assert not Membership.objects.filter(user=world.bob.user).exists()
    assert get_user_model().objects.filter(username="bob").exists()  # the account stays


def test_charlie_gets_404_for_acmes_members_and_keys(world):
    with tenant_context(world.acme.id):
        bob = Membership.objects.get(user=world.bob.user)
        key = services.issue_api_credential(name="acme-crm", scopes=["read"], environment="UIT")
    charlie = signed_in("charlie")
    assert charlie.post(f"/settings/members/{bob.id}/remove/").status_code == 404
    assert (
        charlie.post(f"/settings/members/{bob.id}/roles/", {"roles": ["viewer"]}).status_code == 404
    )
    assert charlie.post(f"/settings/api-keys/{key.credential.id}/revoke/").status_code == 404
    assert "acme-crm" not in text(charlie.get("/settings/"))
    with tenant_context(world.acme.id):
        assert Membership.objects.filter(user=world.bob.user).exists()


def test_the_activity_log_shows_the_tenants_events_to_admins_and_auditors(world):
    with tenant_context(world.acme.id):
        services.add_member(user=world.bob.user, roles=["auditor"], actor="alice")
    with tenant_context(world.globex.id):
        services.issue_api_credential(
            name="globex-secret-system", scopes=["read"], environment="UIT"
        )
    bob = signed_in("bob")
    page = text(bob.get("/activity/"))
    assert "membership.roles_set" in page
    assert "globex-secret-system" not in page
    fragment = text(bob.get("/activity/", {"category": "security"}, HTTP_HX_REQUEST="true"))
    assert "<html" not in fragment
    assert "login.succeeded" in fragment
    assert "membership.roles_set" not in fragment
    with tenant_context(world.acme.id):
        services.add_member(user=world.bob.user, roles=["message_operator"], actor="alice")
    assert bob.get("/activity/").status_code == 403


def test_a_channels_expected_cadence_reads_as_people_say_it(world):
    assert cadence(timedelta(hours=1)) == "every hour"
    assert cadence(timedelta(minutes=15)) == "every 15 minutes"
    assert cadence(timedelta(days=1)) == "every day"
    assert cadence(timedelta(hours=1, minutes=30)) == "every 1 hour 30 minutes"
    assert cadence(None) == "—"
    with tenant_context(world.acme.id):
        Channel.objects.update(expected_cadence=timedelta(hours=1))
    page = text(signed_in("alice").get("/settings/"))
    assert "every hour" in page
    assert "1:00:00" not in page
