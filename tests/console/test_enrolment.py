"""A tenant's required second factor cannot be set up with a stolen password; enrolment links,
recovery codes, notifications, and the forced change of a password someone else chose."""

from __future__ import annotations

import re
import time

import pytest
from django.core.cache import cache
from django.db import connection
from django.test import Client

from core.models import AuditEvent, RecoveryCodes, TOTPSecondFactor
from core.tenancy import tenant_context, user_context
from tenants import services
from tenants.models import Membership
from tenants.tasks import send_account_change_email_task, send_enrolment_link_task
from tests.conftest import PASSWORD
from tests.console.test_second_factor import code, enrol


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def signed_in(username: str, password: str = PASSWORD) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": password}).status_code == 302
    return client


def require_second_factor(world) -> None:
    with tenant_context(world.acme.id):
        services.set_second_factor_policy(tenant=world.acme, required=True, actor="alice")


def own_actions(user, tenant) -> set[str]:
    """The person's security events: their own (tenant-less) ones and those made while acting
    for ``tenant``."""
    with user_context(user.pk), tenant_context(tenant.id):
        return set(
            AuditEvent.objects.filter(actor_user_id=user.pk).values_list("action", flat=True)
        )


def shown_codes(response) -> list[str]:
    return re.findall(r'<code class="secret">([a-z2-7-]+)</code>', response.content.decode())


def test_a_stolen_password_cannot_set_up_the_required_second_factor(world):
    require_second_factor(world)
    mallory = signed_in("bob")  # whoever holds bob's password
    page = mallory.get("/account/second-factor/")
    assert page.status_code == 403
    assert 'data-testid="secret"' not in page.content.decode()  # no seed to scan
    attempt = mallory.post("/account/second-factor/", {"token": "123456"})
    assert attempt.status_code == 403
    assert not TOTPSecondFactor.objects.filter(user=world.bob.user).exists()
    # A second tenant that requires nothing is no way round it either.
    with tenant_context(world.globex.id):
        services.add_member(user=world.bob.user, roles=["viewer"])
    mallory.post("/tenant/switch/", {"tenant_id": str(world.globex.id)})
    assert mallory.get("/account/second-factor/").status_code == 403


def test_an_admins_enrolment_link_lets_only_that_member_enrol_once(
    world, mailoutbox, django_capture_on_commit_callbacks
):
    alice = signed_in("alice")
    enrol(alice)
    require_second_factor(world)
    with tenant_context(world.acme.id):
        bob_membership = Membership.objects.get(user=world.bob.user)
    sent = alice.post(f"/settings/members/{bob_membership.id}/enrolment-link/")
    assert sent.status_code == 302
    # The worker makes the token and emails it to bob's own address; only its hash is stored.
    with django_capture_on_commit_callbacks(execute=True):
        assert send_enrolment_link_task(str(world.acme.id), world.bob.user.pk, "alice")
    assert mailoutbox[-1].to == ["bob@acme.example"]
    link = re.search(r"http://\S+(/account/second-factor/enrol/\S+/)", mailoutbox[-1].body)
    path = link.group(1)
    token = path.rstrip("/").rsplit("/", 1)[1]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM tenants_enrolmentlink WHERE token_hash LIKE %s", [f"%{token}%"]
        )
        assert cursor.fetchone() == (0,)  # RLS hides it here, and the token is nowhere in clear
    # charlie (not a member of acme) cannot use it.
    assert signed_in("charlie").get(path).status_code == 404
    bob = signed_in("bob")
    assert bob.get(path)["Location"] == "/account/second-factor/"
    page = bob.get("/account/second-factor/").content.decode()
    secret = page.split('data-testid="secret">')[1].split("<")[0]
    with django_capture_on_commit_callbacks() as callbacks:
        done = bob.post("/account/second-factor/", {"token": code(secret)})
    assert "Authenticator app set up" in done.content.decode()
    assert len(shown_codes(done)) == 10  # recovery codes, shown this once
    assert bob.get("/").status_code == 200  # this session is verified: bob acts for acme
    # bob is told by email, and the event is his and acme's to see.
    notices = [
        cb
        for cb in callbacks
        if getattr(cb, "args", None) == (world.bob.user.pk, "mfa.enabled", "127.0.0.1")
    ]
    assert notices
    send_account_change_email_task(*notices[0].args)
    assert mailoutbox[-1].to == ["bob@acme.example"]
    assert "authenticator app was set up" in mailoutbox[-1].body
    assert "mfa.enabled" in own_actions(world.bob.user, world.acme)
    with tenant_context(world.acme.id):
        assert AuditEvent.objects.filter(action="mfa.enrolment_link_used").count() == 1
    # The link is spent.
    assert bob.get(path).status_code == 404


def test_recovery_codes_work_once_each_are_stored_hashed_and_renew_with_a_current_code(world):
    alice = signed_in("alice")
    page = alice.get("/account/second-factor/").content.decode()
    secret = page.split('data-testid="secret">')[1].split("<")[0]
    codes = shown_codes(alice.post("/account/second-factor/", {"token": code(secret)}))
    assert len(codes) == 10
    assert len(set(codes)) == 10
    with connection.cursor() as cursor:
        cursor.execute("SELECT code_hashes::text FROM core_recoverycodes")
        stored = cursor.fetchone()[0]
    for one in codes:
        assert one not in stored
        assert one.replace("-", "") not in stored

    def sign_in_with(recovery_code: str) -> Client:
        client = Client()
        client.post("/login/", {"username": "alice", "password": PASSWORD})
        client.post("/login/verify/", {"token": recovery_code})
        return client

    assert sign_in_with(codes[0]).get("/").status_code == 200
    assert sign_in_with(codes[0]).get("/").status_code == 302  # spent
    assert sign_in_with(codes[1].upper()).get("/").status_code == 200
    assert RecoveryCodes.objects.get(user=world.alice.user).code_hashes.__len__() == 8
    # New codes need a current code from the app; the old ones then stop working.
    refused = alice.post("/account/second-factor/", {"action": "recovery-codes", "token": "000000"})
    assert shown_codes(refused) == []
    time.sleep(1.1)  # django-otp's lock after a wrong code
    renewed = shown_codes(
        alice.post(
            "/account/second-factor/",
            {"action": "recovery-codes", "token": code(secret, steps_ahead=1)},
        )
    )
    assert len(renewed) == 10
    assert not set(renewed) & set(codes)
    assert sign_in_with(codes[2]).get("/").status_code == 302
    assert sign_in_with(renewed[0]).get("/").status_code == 200
    actions = own_actions(world.alice.user, world.acme)
    assert {"mfa.enabled", "recovery_code.used", "recovery_codes.regenerated"} <= actions


def test_a_password_someone_else_chose_must_be_changed_first(db):
    services.onboard_tenant(
        slug="initech",
        name="Initech Supply",
        mpid="INIT",
        role_code="SUP",
        dip_id="1000000077",
        environment="UIT",
        dip_base_url="https://dip.example",
        admin_username="ida",
        admin_email="ida@initech.example",
        admin_password="provider-chose-this-1",
        actor="provider-admin",
    )
    ida = signed_in("ida", "provider-chose-this-1")
    for path in ("/", "/settings/", "/account/second-factor/", "/api/v1/identities/"):
        response = ida.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == "/account/password/", path
    page = ida.get("/account/password/").content.decode()
    assert 'data-testid="password-change-required"' in page
    same = ida.post(
        "/account/password/",
        {
            "old_password": "provider-chose-this-1",
            "new_password1": "provider-chose-this-1",
            "new_password2": "provider-chose-this-1",
        },
    )
    assert same.status_code == 200  # the same password again is not a change
    ida.post(
        "/account/password/",
        {
            "old_password": "provider-chose-this-1",
            "new_password1": "ida-chose-her-own-9",
            "new_password2": "ida-chose-her-own-9",
        },
    )
    assert "Initech Supply" in ida.get("/").content.decode()
    assert "Initech Supply" in signed_in("ida", "ida-chose-her-own-9").get("/").content.decode()


def test_a_recovery_code_signs_in_outside_a_test_transaction(committed_db):
    """As in production (autocommit): spending a code locks its row inside its own transaction."""
    from tenants import enrolment
    from tests.conftest import build_world

    world = build_world()
    device = TOTPSecondFactor.new_for(world.bob.user)
    device.confirmed = True
    device.save()
    codes = enrolment.make_recovery_codes(user=world.bob.user)
    client = Client()
    client.post("/login/", {"username": "bob", "password": PASSWORD})
    assert client.post("/login/verify/", {"token": codes[3]}).status_code == 302
    assert "Acme Energy Supply" in client.get("/").content.decode()


def test_another_tenants_admin_cannot_send_our_members_enrolment_links(world):
    with tenant_context(world.acme.id):
        bob_membership = Membership.objects.get(user=world.bob.user)
    charlie = signed_in("charlie")
    assert charlie.post(f"/settings/members/{bob_membership.id}/enrolment-link/").status_code == 404
    assert (
        signed_in("bob").post(f"/settings/members/{bob_membership.id}/enrolment-link/").status_code
        == 403
    )


def test_using_a_recovery_code_does_not_lock_the_app_out(world):
    alice = signed_in("alice")
    page = alice.get("/account/second-factor/").content.decode()
    secret = page.split('data-testid="secret">')[1].split("<")[0]
    codes = shown_codes(alice.post("/account/second-factor/", {"token": code(secret)}))
    for recovery in codes[:3]:
        client = Client()
        client.post("/login/", {"username": "alice", "password": PASSWORD})
        assert client.post("/login/verify/", {"token": recovery}).status_code == 302
    device = TOTPSecondFactor.objects.get(user=world.alice.user)
    assert device.throttling_failure_count == 0
    client = Client()
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    right = client.post("/login/verify/", {"token": code(secret, steps_ahead=1)})
    assert right.status_code == 302
