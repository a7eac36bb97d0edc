"""KEK rotation in practice: every stored secret moves to the new KEK and still decrypts."""

from __future__ import annotations

import base64
import os

from django.core.management import call_command

from core import crypto
from core.models import TOTPSecondFactor
from core.tenancy import tenant_context
from tenants.models import Connection
from tenants.services import get_connection_api_key
from tests.conftest import build_world


def test_rewrap_moves_every_secret_to_the_active_kek(committed_db, settings, capsys):
    world = build_world()
    TOTPSecondFactor.new_for(world.alice.user).save()
    old_spec = settings.BUSBAR_KEKS
    new_kek = "next:" + base64.b64encode(os.urandom(32)).decode()
    settings.BUSBAR_KEKS = f"{old_spec},{new_kek}"
    settings.BUSBAR_ACTIVE_KEK = "next"

    call_command("rewrap_secrets")
    assert "re-wrapped 3 secret(s) under KEK 'next'" in capsys.readouterr().out

    settings.BUSBAR_KEKS = new_kek  # the old KEK is gone now
    for tenant_id, key in (
        (world.acme.id, "acme-dip-api-key-123"),
        (world.globex.id, "globex-dip-api-key-456"),
    ):
        with tenant_context(tenant_id):
            connection = Connection.objects.get()
            assert crypto.kek_id(connection.api_key_encrypted) == "next"
            assert get_connection_api_key(connection=connection) == key
    assert len(TOTPSecondFactor.objects.get().bin_key) == 20
    call_command("rewrap_secrets")
    assert "re-wrapped 0 secret(s)" in capsys.readouterr().out
