"""Move every stored secret to the active key-encryption key (after adding a new KEK).

Only the data keys are re-wrapped; the secrets themselves are never decrypted. Run it after
putting the new KEK first in BUSBAR_ACTIVE_KEK (keeping the old one in BUSBAR_KEKS), then remove
the old KEK once this reports nothing left under it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from core import crypto
from core.models import TOTPSecondFactor
from core.tenancy import tenant_context
from tenants.models import Certificate, Connection
from tenants.selectors import list_active_tenant_ids


class Command(BaseCommand):
    help = "Re-wrap every stored secret's data key under the active KEK."

    def handle(self, *args: Any, **options: Any) -> None:
        keyring = crypto.Keyring.parse(*_configured())
        moved = 0
        for tenant_id in list_active_tenant_ids():
            with tenant_context(tenant_id):
                moved += _rewrap(Connection, "api_key_encrypted", keyring)
                moved += _rewrap(Certificate, "private_key_encrypted", keyring)
        with transaction.atomic():
            moved += _rewrap(TOTPSecondFactor, "key_encrypted", keyring)
        self.stdout.write(f"re-wrapped {moved} secret(s) under KEK {keyring.active!r}")


def _configured() -> tuple[str, str]:
    return settings.BUSBAR_KEKS or "", settings.BUSBAR_ACTIVE_KEK or ""


def _rewrap(model: Any, field: str, keyring: crypto.Keyring) -> int:
    moved = 0
    rows = model.objects.select_for_update().exclude(**{field: ""}).only("pk", field)
    for row in rows:
        token = getattr(row, field)
        if crypto.kek_id(token) == keyring.active:
            continue
        setattr(row, field, crypto.rewrap(token, keyring=keyring))
        row.save(update_fields=[field])
        moved += 1
    return moved
