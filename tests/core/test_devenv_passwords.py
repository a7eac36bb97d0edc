"""Two checkouts on one PostgreSQL server share the roles' passwords instead of resetting them.

Roles belong to the whole server: when every ``make run`` set the passwords from its own checkout's
secrets, two checkouts on one password-protected server locked each other out. These tests use
roles of their own on the test server, never Busbar's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from core.devenv import bootstrap_roles, server_passwords


def checkout_secrets(tag: str) -> dict[str, str]:
    return {
        "owner_password": f"{tag}-owner-{uuid.uuid4().hex}",
        "runtime_password": f"{tag}-runtime-{uuid.uuid4().hex}",
        "support_password": f"{tag}-support-{uuid.uuid4().hex}",
        "django_secret_key": f"{tag}-secret",
    }


def password_matches(stored: str, role: str, password: str) -> bool:
    """Whether PostgreSQL's stored verifier (SCRAM-SHA-256 or md5) is for ``password``."""
    if stored.startswith("md5"):
        return stored == "md5" + hashlib.md5((password + role).encode()).hexdigest()
    _scheme, iterations_salt, keys = stored.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return base64.b64encode(hashlib.sha256(client_key).digest()).decode() == stored_key


@pytest.fixture
def admin() -> str:
    return os.environ["BUSBAR_ADMIN_DATABASE_URL"]


@pytest.fixture
def role_names(admin: str) -> Iterator[tuple[str, str, str]]:
    prefix = f"busbar_t{uuid.uuid4().hex[:8]}"
    names = (f"{prefix}_owner", f"{prefix}_app", f"{prefix}_support")
    yield names
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def stored_password(admin: str, role: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        return conn.execute(
            "SELECT rolpassword FROM pg_authid WHERE rolname = %s", [role]
        ).fetchone()[0]


def test_a_second_checkout_uses_the_servers_passwords_and_changes_none(admin, role_names, tmp_path):
    store = tmp_path / "credentials"
    owner, runtime, support = role_names
    first_checkout, second_checkout = checkout_secrets("first"), checkout_secrets("second")

    passwords, recorded = server_passwords(admin, first_checkout, store=store)
    assert recorded
    assert passwords == {k: first_checkout[k] for k in passwords}
    bootstrap_roles(admin, passwords, set_passwords=recorded, names=role_names)
    before = {role: stored_password(admin, role) for role in role_names}
    assert password_matches(before[runtime], runtime, first_checkout["runtime_password"])

    # The second checkout (other secrets under its own var/) starts on the same server.
    again, recorded = server_passwords(admin, second_checkout, store=store)
    assert (again, recorded) == (passwords, False)
    bootstrap_roles(admin, again, set_passwords=recorded, names=role_names)
    assert {role: stored_password(admin, role) for role in role_names} == before
    # Even handed other passwords, starting up never changes an existing role's.
    bootstrap_roles(admin, second_checkout, names=role_names)
    after = {role: stored_password(admin, role) for role in role_names}
    assert after == before
    for role, key in ((owner, "owner_password"), (support, "support_password")):
        assert password_matches(after[role], role, first_checkout[key])
        assert not password_matches(after[role], role, second_checkout[key])


def test_the_servers_passwords_are_kept_owner_only(admin, tmp_path):
    store = tmp_path / "credentials"
    server_passwords(admin, checkout_secrets("only"), store=store)
    (record,) = store.iterdir()
    assert record.name.startswith("postgres-")
    assert (record.stat().st_mode & 0o777, store.stat().st_mode & 0o777) == (0o600, 0o700)
