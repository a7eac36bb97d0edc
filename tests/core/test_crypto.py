"""Envelope encryption: round trip, loud failures, KEK rotation."""

from __future__ import annotations

import base64
import os

import pytest

from core import crypto
from core.crypto import CryptoError, Keyring


def ring(*kids: str, active: str = "") -> Keyring:
    spec = ",".join(f"{kid}:{base64.b64encode(os.urandom(32)).decode()}" for kid in kids)
    return Keyring.parse(spec, active)


def test_a_secret_round_trips_and_is_not_stored_in_clear():
    keys = ring("k1")
    token = crypto.encrypt(
        b"-----BEGIN PRIVATE KEY-----secret", context="tenant:a:key", keyring=keys
    )
    assert b"secret" not in token.encode()
    assert "secret" not in base64.urlsafe_b64decode(token.split(".")[4] + "==").decode("latin-1")
    assert crypto.decrypt(token, context="tenant:a:key", keyring=keys).endswith(b"secret")


def test_each_encryption_uses_a_fresh_data_key():
    keys = ring("k1")
    assert crypto.encrypt(b"same", context="c", keyring=keys) != crypto.encrypt(
        b"same", context="c", keyring=keys
    )


def test_the_wrong_kek_fails_loudly():
    token = crypto.encrypt(b"secret", context="c", keyring=ring("k1"))
    impostor = ring("k1")  # same id, other key material
    with pytest.raises(CryptoError, match="does not unwrap"):
        crypto.decrypt(token, context="c", keyring=impostor)


def test_a_missing_kek_is_named():
    token = crypto.encrypt(b"secret", context="c", keyring=ring("old"))
    with pytest.raises(CryptoError, match="'old', which is not configured"):
        crypto.decrypt(token, context="c", keyring=ring("new"))


def test_a_token_moved_to_another_tenant_fails():
    keys = ring("k1")
    token = crypto.encrypt(b"secret", context="tenant:acme:connection.api_key", keyring=keys)
    with pytest.raises(CryptoError, match="wrong context or tampered"):
        crypto.decrypt(token, context="tenant:globex:connection.api_key", keyring=keys)


def test_a_tampered_token_fails():
    keys = ring("k1")
    parts = crypto.encrypt(b"secret", context="c", keyring=keys).split(".")
    ciphertext = bytearray(base64.urlsafe_b64decode(parts[4] + "=" * (-len(parts[4]) % 4)))
    ciphertext[0] ^= 1
    parts[4] = base64.urlsafe_b64encode(bytes(ciphertext)).decode().rstrip("=")
    with pytest.raises(CryptoError, match="failed authentication: wrong context or tampered"):
        crypto.decrypt(".".join(parts), context="c", keyring=keys)


def test_kek_rotation_rewraps_without_changing_the_secret():
    old = ring("k1")
    token = crypto.encrypt(b"secret", context="c", keyring=old)
    rotated = Keyring(keys={**old.keys, **ring("k2").keys}, active="k2")
    rewrapped = crypto.rewrap(token, keyring=rotated)
    assert crypto.kek_id(rewrapped) == "k2"
    assert rewrapped.split(".")[4] == token.split(".")[4]  # ciphertext untouched
    retired = Keyring(keys={"k2": rotated.keys["k2"]}, active="k2")
    assert crypto.decrypt(rewrapped, context="c", keyring=retired) == b"secret"
    with pytest.raises(CryptoError, match="wrapped by KEK 'k1', which is not configured"):
        crypto.decrypt(token, context="c", keyring=retired)


def test_misconfigured_keyrings_are_refused():
    with pytest.raises(CryptoError, match="no key-encryption key"):
        Keyring.parse("")
    with pytest.raises(CryptoError, match="must be 32 bytes"):
        Keyring.parse("k1:" + base64.b64encode(b"short").decode())
    with pytest.raises(CryptoError, match="not among"):
        Keyring.parse("k1:" + base64.b64encode(os.urandom(32)).decode(), "k9")


def test_the_connection_api_key_is_stored_encrypted(world):
    from django.db import connection

    from core.tenancy import tenant_context
    from tenants.models import Connection
    from tenants.services import get_connection_api_key

    with tenant_context(world.acme.id):
        stored = Connection.objects.get()
        with connection.cursor() as cursor:
            cursor.execute("SELECT api_key_encrypted FROM tenants_connection")
            raw = cursor.fetchone()[0]
        assert "acme-dip-api-key" not in raw
        assert raw.startswith("v1.")
        assert get_connection_api_key(connection=stored) == "acme-dip-api-key-123"
