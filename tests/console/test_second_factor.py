"""Authenticator-app second factors: set-up, the two-step sign-in, removal, and staff pages."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from base64 import b32decode
from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django_otp.oath import TOTP

from core.models import AuditEvent, TOTPSecondFactor
from core.tenancy import tenant_context
from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


# django-otp locks a device for a second after a wrong code; two seconds on is past it.
LOCK_OVER = timedelta(seconds=2)


def code(secret: str, *, steps_ahead: int = 0) -> str:
    """The code an authenticator app shows now (or ``steps_ahead`` periods from now)."""
    totp = TOTP(b32decode(secret), step=30, t0=0, digits=6, drift=0)
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def enrol(client: Client) -> str:
    page = client.get("/account/second-factor/").content.decode()
    secret = page.split('data-testid="secret">')[1].split("<")[0]
    response = client.post("/account/second-factor/", {"token": code(secret)}, follow=True)
    assert "Authenticator app set up" in response.content.decode()
    return secret


def signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def test_setting_up_an_app_stores_its_seed_encrypted(world):
    alice = signed_in("alice")
    page = alice.get("/account/second-factor/").content.decode()
    assert "<svg" in page  # the QR code, drawn here, not fetched from anywhere
    secret = enrol(alice)
    seed_hex = b32decode(secret).hex()
    with connection.cursor() as cursor:
        cursor.execute("SELECT key_encrypted, confirmed FROM core_totpsecondfactor")
        stored, confirmed = cursor.fetchone()
    assert confirmed is True
    assert stored.startswith("v1.")
    assert seed_hex not in stored
    assert secret not in stored


def test_the_qr_code_scales_to_fill_its_box(world):
    """Without a viewBox a fixed-size SVG drew at about 40 px inside its 200 px box, too small
    for a phone to scan."""
    page = signed_in("alice").get("/account/second-factor/").content.decode()
    svg_text = page.split('data-testid="qr">')[1].split("</div>")[0].strip()
    svg = ET.fromstring(svg_text)
    assert "width" not in svg.attrib
    assert "height" not in svg.attrib
    left, top, width, height = (int(v) for v in svg.attrib["viewBox"].split())
    assert (left, top) == (0, 0)
    assert width == height
    # The smallest QR symbol is 21 modules; with the four-module quiet zone each side, 29.
    assert width >= 29


def test_a_wrong_code_does_not_confirm_the_app(world):
    alice = signed_in("alice")
    alice.get("/account/second-factor/")
    response = alice.post("/account/second-factor/", {"token": "000000"}, follow=True)
    assert "That code is not valid" in response.content.decode()
    assert not TOTPSecondFactor.objects.filter(confirmed=True).exists()


def test_with_an_app_a_password_alone_does_not_sign_in(world):
    secret = enrol(signed_in("alice"))
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": PASSWORD})
    assert response["Location"] == "/login/verify/"
    assert client.get("/").status_code == 302  # not signed in yet
    wrong = client.post("/login/verify/", {"token": "123456"})
    assert "That code is not valid" in wrong.content.decode()
    assert client.get("/").status_code == 302
    # django-otp locks the app for a second after a wrong code: even the right one waits.
    assert client.post("/login/verify/", {"token": code(secret, steps_ahead=1)}).status_code == 200
    with time_machine.travel(LOCK_OVER):  # a controlled clock, not a sleep
        right = client.post("/login/verify/", {"token": code(secret, steps_ahead=1)})
    assert right.status_code == 302
    page = client.get("/").content.decode()
    assert "Acme Energy Supply" in page


def test_repeated_wrong_codes_are_throttled(world):
    enrol(signed_in("alice"))
    client = Client()
    client.post("/login/", {"username": "alice", "password": PASSWORD})
    for _ in range(3):
        client.post("/login/verify/", {"token": "111111"})
    assert client.post("/login/verify/", {"token": "222222"}).status_code == 429


def test_the_second_step_cannot_be_reached_without_the_first(world):
    response = Client().get("/login/verify/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"


def test_removing_the_app_needs_a_current_code(world):
    alice = signed_in("alice")
    secret = enrol(alice)
    kept = alice.post(
        "/account/second-factor/", {"action": "remove", "token": "999999"}, follow=True
    )
    assert "the authenticator app stays" in kept.content.decode()
    refused = alice.post(
        "/account/second-factor/",
        {"action": "remove", "token": code(secret, steps_ahead=1)},
        follow=True,
    )
    assert "the authenticator app stays" in refused.content.decode()  # locked for a moment
    with time_machine.travel(LOCK_OVER):  # django-otp's lock after a wrong code is over
        removed = alice.post(
            "/account/second-factor/",
            {"action": "remove", "token": code(secret, steps_ahead=1)},
            follow=True,
        )
    assert "Authenticator app removed" in removed.content.decode()
    assert not TOTPSecondFactor.objects.filter(confirmed=True).exists()


def test_staff_pages_need_a_verified_second_factor(world):
    from django.contrib.auth import get_user_model

    sam = get_user_model().objects.create_user("sam", password=PASSWORD, is_staff=True)
    client = Client()
    client.force_login(sam)
    response = client.get("/staff/admin/")
    assert response.status_code == 302  # a password session is not enough
    secret = enrol(client)  # setting up the app verifies this session
    assert client.get("/staff/admin/").status_code == 200
    fresh = Client()
    fresh.post("/login/", {"username": "sam", "password": PASSWORD})
    fresh.post("/login/verify/", {"token": code(secret, steps_ahead=1)})
    assert fresh.get("/staff/admin/").status_code == 200


def test_a_tenant_can_require_a_second_factor_of_its_members(world):
    alice = signed_in("alice")
    refused = alice.post("/settings/second-factor/", {"required": "on"}, follow=True)
    assert "Set up your own authenticator app" in refused.content.decode()
    enrol(alice)  # acme requires nothing yet: her own choice, on the spot
    alice.post("/settings/second-factor/", {"required": "on"})
    assert alice.get("/certificates/").status_code == 200
    # bob has no app: he can sign in, but cannot act for acme until he sets one up...
    bob = signed_in("bob")
    assert bob.get("/")["Location"] == "/account/second-factor/"
    # ...and setting one up needs the enrolment link only his admin can send (see
    # test_enrolment.py): his password alone does not let anyone do it.
    page = bob.get("/account/second-factor/")
    assert page.status_code == 403
    assert 'data-testid="needs-link"' in page.content.decode()
    # globex did not opt in: charlie is unaffected.
    assert signed_in("charlie").get("/").status_code == 200
    with tenant_context(world.acme.id):
        event = AuditEvent.objects.get(action="tenant.second_factor_policy")
    assert event.detail == {"required": True}
