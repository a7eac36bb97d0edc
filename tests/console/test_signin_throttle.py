"""Sign-in throttling behind the documented proxy: the guilty address or pair is slowed, nobody
else is locked out, and audit addresses are the clients', not the proxy's."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django.test import Client, override_settings

from core.models import AuditEvent
from core.tenancy import user_context
from tests.conftest import PASSWORD

PROXY = "10.9.8.7"


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def behind_proxy(client_address: str, *, chain: str = "") -> Client:
    """A browser at ``client_address`` reaching Busbar through nginx, which overwrites
    X-Forwarded-For with the address it saw (``chain`` is anything the client added itself)."""
    forwarded = f"{chain}, {client_address}" if chain else client_address
    return Client(REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR=forwarded)


def failed_sign_in_addresses(user) -> set[str]:
    """Where failed sign-ins to this person's account came from (their own account events)."""
    with user_context(user.pk):
        return set(
            AuditEvent.objects.filter(action="login.failed", actor_user_id=user.pk).values_list(
                "source_address", flat=True
            )
        )


def attempt(client: Client, username: str, password: str) -> int:
    return client.post("/login/", {"username": username, "password": password}).status_code


@override_settings(TRUSTED_PROXIES=[f"{PROXY}/32"])
def test_one_clients_failures_behind_the_proxy_do_not_block_another_client(world):
    mallory = behind_proxy("203.0.113.66")
    for _ in range(10):
        attempt(mallory, "bob", "wrong-guess")
    assert attempt(mallory, "bob", PASSWORD) == 429  # the guilty address is refused
    # Everyone else arrives from the same proxy address, and is not affected.
    assert attempt(behind_proxy("198.51.100.7"), "alice", PASSWORD) == 302
    assert attempt(behind_proxy("198.51.100.8"), "charlie", PASSWORD) == 302


@override_settings(TRUSTED_PROXIES=[f"{PROXY}/32"], LOGIN_THROTTLE_USERNAME_ATTEMPTS=8)
def test_the_real_person_signs_in_while_someone_elsewhere_hammers_their_name(world):
    for n in range(6):  # a distributed attack: many addresses, one name
        attacker = behind_proxy(f"203.0.113.{n + 1}")
        attempt(attacker, "alice", "wrong-guess")
        attempt(attacker, "alice", "wrong-guess-2")
    # An address that already failed for alice gets no more tries, even with the right password...
    assert attempt(behind_proxy("203.0.113.1"), "alice", PASSWORD) == 429
    # ...and alice, from an address with no failure, signs in.
    alice = behind_proxy("198.51.100.20")
    assert attempt(alice, "alice", PASSWORD) == 302
    assert alice.get("/").status_code == 200


@override_settings(TRUSTED_PROXIES=[f"{PROXY}/32"], LOGIN_THROTTLE_ADDRESS_ATTEMPTS=6)
def test_an_address_spraying_many_names_is_refused(world):
    sprayer = behind_proxy("203.0.113.99")
    for name in ("alice", "bob", "charlie", "dana", "erin", "frank"):
        attempt(sprayer, name, "Winter2026!")
    assert attempt(sprayer, "bob", PASSWORD) == 429
    assert attempt(behind_proxy("198.51.100.30"), "bob", PASSWORD) == 302


@override_settings(TRUSTED_PROXIES=[f"{PROXY}/32"])
def test_a_forged_forwarded_header_neither_dodges_the_throttle_nor_lands_in_the_audit_log(
    world,
):
    # Straight to the app (not through the proxy): X-Forwarded-For is the client's own words.
    for n in range(5):
        spoofer = Client(REMOTE_ADDR="203.0.113.50", HTTP_X_FORWARDED_FOR=f"192.0.2.{n}")
        attempt(spoofer, "bob", "wrong-guess")
    spoofer = Client(REMOTE_ADDR="203.0.113.50", HTTP_X_FORWARDED_FOR="192.0.2.200")
    assert attempt(spoofer, "bob", PASSWORD) == 429
    # Through the proxy, whatever the client prepended is ignored: nginx's hop is the address.
    behind_proxy("198.51.100.40", chain="127.0.0.1, 10.9.8.7").post(
        "/login/", {"username": "bob", "password": "wrong"}
    )
    addresses = failed_sign_in_addresses(world.bob.user)
    assert "198.51.100.40" in addresses
    assert "203.0.113.50" in addresses
    assert not addresses & {"127.0.0.1", PROXY, "192.0.2.0", "192.0.2.1"}


def test_without_trusted_proxies_the_header_is_ignored(world):
    client = Client(REMOTE_ADDR="203.0.113.77", HTTP_X_FORWARDED_FOR="198.51.100.1")
    attempt(client, "bob", "wrong")
    found = failed_sign_in_addresses(world.bob.user)
    assert found == {"203.0.113.77"}


def test_the_proxy_sets_the_header_the_app_trusts():
    """nginx overwrites X-Forwarded-For with the connecting address (never appends the client's
    chain), in every location that proxies to Busbar."""
    from pathlib import Path

    conf = (Path(__file__).resolve().parents[2] / "platform/nginx/busbar.conf").read_text()
    # the console and API (busbar_web) and the DIP webhooks' own ingest server (busbar_ingest)
    web = conf.count("proxy_pass http://busbar_web;")
    proxied = web + conf.count("proxy_pass http://busbar_ingest;")
    assert web >= 1
    assert proxied >= 2
    assert conf.count("proxy_set_header X-Forwarded-For $remote_addr;") == proxied
    assert "$proxy_add_x_forwarded_for" not in conf
