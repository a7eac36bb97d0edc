"""Register the DIP webhooks of every connection (or one tenant's) that has a complete credential
set: the onboarding runbook's last step, and what ``make run`` does once dipsim is up."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.tenancy import tenant_context
from messaging.inbound import registration
from tenants.certificates import CertificateError
from tenants.models import Connection, Tenant
from tenants.selectors import list_active_tenant_ids


class Command(BaseCommand):
    help = "Register inbound webhooks (pubconfig) and status webhooks with the DIP."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", help="the tenant's slug (default: every active tenant)")

    def handle(self, *args: Any, **options: Any) -> None:
        failures = 0
        for tenant_id in list_active_tenant_ids():
            with tenant_context(tenant_id):
                tenant = Tenant.objects.filter(id=tenant_id).first()
                if tenant is None or (options["tenant"] and tenant.slug != options["tenant"]):
                    continue
                for connection in Connection.objects.select_related("identity").order_by("pk"):
                    try:
                        registration.check_registration_possible(connection=connection)
                    except CertificateError as exc:
                        self.stdout.write(f"{tenant.slug} {connection}: skipped ({exc})")
                        continue
                    except registration.RegistrationError as exc:
                        raise CommandError(str(exc)) from exc
                    outcomes = registration.register_webhooks(connection=connection, actor="cli")
                    for o in outcomes:
                        failures += not o.ok
                        self.stdout.write(
                            f"{tenant.slug} {connection} {o.target}: "
                            f"{'registered' if o.ok else 'FAILED'} {o.status or ''} {o.detail}"
                        )
        if failures:
            raise CommandError(f"{failures} registration(s) failed")
