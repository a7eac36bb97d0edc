"""Run the reconciliation controls now (beat runs them every BUSBAR_RECONCILIATION_SECONDS)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.tenancy import tenant_context
from messaging.reconciliation.controls import CONTROLS
from messaging.reconciliation.services import run_reconciliation
from messaging.tasks import reconcile_tenant_task
from tenants.models import Tenant
from tenants.selectors import list_active_tenant_ids


class Command(BaseCommand):
    help = "Run the reconciliation controls for every active tenant (or one) and print verdicts."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--tenant", help="the tenant's slug (default: every active tenant)")
        parser.add_argument(
            "--control", action="append", choices=sorted(CONTROLS), help="(repeatable)"
        )
        parser.add_argument(
            "--enqueue", action="store_true", help="hand each tenant's run to a worker instead"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        matched = False
        for tenant_id in list_active_tenant_ids():
            with tenant_context(tenant_id):
                tenant = Tenant.objects.filter(id=tenant_id).first()
                if tenant is None or (options["tenant"] and tenant.slug != options["tenant"]):
                    continue
                matched = True
                if options["enqueue"]:
                    reconcile_tenant_task.delay_on_commit(str(tenant_id), "cli")
                    self.stdout.write(f"{tenant.slug}: reconciliation queued")
                    continue
                for result in run_reconciliation(controls=options["control"], actor="cli"):
                    self.stdout.write(
                        f"{tenant.slug} {result.control} {result.interface_id or '-'}"
                        f" {result.direction or ''}: {result.status} ({result.summary})"
                    )
        if options["tenant"] and not matched:
            raise CommandError(f"no active tenant {options['tenant']!r}")
