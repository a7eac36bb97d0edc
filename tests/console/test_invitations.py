"""Members join a tenant only by accepting an invitation; inviting reveals no one's account; and a
person's sign-ins show only in the tenants they act for."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client

from core.models import AuditEvent
from core.tenancy import tenant_context
from tenants.models import Invitation, Membership
from tenants.tasks import send_invitation_email_task
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


def invite(admin: Client, username: str, email: str = "someone@acme.example"):
    return admin.post(
        "/settings/members/", {"username": username, "email": email, "roles": ["viewer"]}
    )


def flash(admin: Client) -> str:
    """The message the admin's next page shows."""
    page = admin.get("/settings/").content.decode()
    return page.split('<ul class="flash">')[1].split("</ul>")[0]


def test_the_answer_is_the_same_for_an_existing_and_a_new_username(world):
    alice = signed_in("alice")
    existing = invite(alice, "charlie")  # globex's admin
    said_for_existing = flash(alice)
    new = invite(alice, "zelda")  # nobody
    said_for_new = flash(alice)
    assert existing.status_code == new.status_code == 302
    assert existing["Location"] == new["Location"]
    assert said_for_existing.replace("charlie", "X") == said_for_new.replace("zelda", "X")
    # The settings page lists both the same way: invited, not yet members.
    page = alice.get("/settings/").content.decode()
    invited = page.split('<table id="invitations">')[1].split("</table>")[0]
    assert "charlie" in invited
    assert "zelda" in invited
    assert "charlie@globex.example" not in page  # an outsider's address is not shown either


def test_an_existing_account_joins_only_by_accepting(world, mailoutbox):
    alice = signed_in("alice")
    invite(alice, "charlie", email="attacker@acme.example")
    with tenant_context(world.acme.id):
        assert not Membership.objects.filter(user=world.charlie.user).exists()
        invitation = Invitation.objects.get(user=world.charlie.user)
    send_invitation_email_task(str(world.acme.id), invitation.id)
    # The email goes to charlie's own address, never to the one the inviting admin typed.
    assert [m.to for m in mailoutbox] == [["charlie@globex.example"]]
    assert "Acme Energy Supply" in mailoutbox[0].body
    charlie = signed_in("charlie")
    assert 'data-testid="pending-invitations"' in charlie.get("/").content.decode()
    page = charlie.get("/invitations/").content.decode()
    assert "Acme Energy Supply" in page
    charlie.post(f"/invitations/{invitation.id}/decline/")
    with tenant_context(world.acme.id):
        assert not Membership.objects.filter(user=world.charlie.user).exists()
        assert Invitation.objects.get(id=invitation.id).status == "declined"
    # Declined is final; a new invitation, accepted, makes him a member with the invited roles.
    assert charlie.post(f"/invitations/{invitation.id}/accept/").status_code == 404
    invite(alice, "charlie")
    with tenant_context(world.acme.id):
        second = Invitation.objects.get(user=world.charlie.user, status="pending")
    charlie.post(f"/invitations/{second.id}/accept/")
    with tenant_context(world.acme.id):
        assert Membership.objects.get(user=world.charlie.user).roles == ["viewer"]
    with tenant_context(world.globex.id):  # his own tenant is untouched
        assert "tenant_admin" in Membership.objects.get(user=world.charlie.user).roles


def test_nobody_else_can_answer_an_invitation(world):
    alice = signed_in("alice")
    invite(alice, "charlie")
    with tenant_context(world.acme.id):
        invitation = Invitation.objects.get(user=world.charlie.user)
    bob = signed_in("bob")
    assert bob.post(f"/invitations/{invitation.id}/accept/").status_code == 404
    assert "Acme" not in signed_in("charlie").get("/").content.decode()
    with tenant_context(world.acme.id):
        assert not Membership.objects.filter(user=world.charlie.user).exists()


def test_a_new_account_chooses_its_own_password_from_the_invitation(world, mailoutbox):
    alice = signed_in("alice")
    invite(alice, "dana", email="dana@acme.example")
    dana_user = get_user_model().objects.get(username="dana")
    assert not dana_user.has_usable_password()  # nobody, the admin included, knows a password
    with tenant_context(world.acme.id):
        invitation = Invitation.objects.get(user=dana_user)
    send_invitation_email_task(str(world.acme.id), invitation.id)
    assert mailoutbox[0].to == ["dana@acme.example"]
    link = re.search(r"http://\S+/account/set-password/\S+/", mailoutbox[0].body).group(0)
    path = link.split("://", 1)[1].split("/", 1)[1]
    chosen = "dana-chose-this-long-one"
    Client().post(f"/{path}", {"new_password1": chosen, "new_password2": chosen})
    assert Client().get(f"/{path}").status_code == 404  # the link worked once
    dana = signed_in("dana", chosen)
    assert dana.get("/")["Location"] == "/invitations/"  # a member of nothing yet: her way in
    dana.post(f"/invitations/{invitation.id}/accept/")
    assert "Acme Energy Supply" in dana.get("/").content.decode()


def charlies_sign_ins(tenant) -> list[str]:
    with tenant_context(tenant.id):
        return list(
            AuditEvent.objects.filter(actor="charlie", action__startswith="login.")
            .order_by("occurred_at")
            .values_list("action", flat=True)
        )


def test_sign_ins_show_only_in_the_tenant_the_person_acts_for(world):
    alice = signed_in("alice")
    invite(alice, "charlie")
    with tenant_context(world.acme.id):
        invitation = Invitation.objects.get(user=world.charlie.user)
    # Before accepting, nothing of charlie's reaches acme: his sign-in is his and globex's.
    charlie = signed_in("charlie")
    charlie.get("/")
    assert charlies_sign_ins(world.acme) == []
    assert charlies_sign_ins(world.globex) == ["login.succeeded"]
    charlie.post(f"/invitations/{invitation.id}/accept/")  # now in acme and globex
    charlie.post("/logout/")
    seen_by_acme = charlies_sign_ins(world.acme)
    # He fails once, then signs in to act for globex only: acme sees neither.
    Client().post("/login/", {"username": "charlie", "password": "wrong"})
    charlie = signed_in("charlie")
    charlie.post("/tenant/switch/", {"tenant_id": str(world.globex.id)})
    charlie.get("/")
    assert charlies_sign_ins(world.acme) == seen_by_acme
    assert "login.failed" not in signed_in("alice").get("/activity/").content.decode()
    # When he chooses to act for acme, acme sees that sign-in.
    charlie.post("/tenant/switch/", {"tenant_id": str(world.acme.id)})
    charlie.get("/")
    assert charlies_sign_ins(world.acme) == [*seen_by_acme, "login.succeeded"]
