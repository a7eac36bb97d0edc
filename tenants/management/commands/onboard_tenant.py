"""Provider admins onboard a tenant: the tenant, one DIP identity and connection, its first admin."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.tenancy import tenant_context
from tenants import services
from tenants.models import Environment, Role


class Command(BaseCommand):
    help = "Create a tenant with its first DIP identity, connection and tenant admin."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--slug", required=True)
        parser.add_argument("--name", required=True)
        parser.add_argument("--mpid", required=True, help="four-letter MPID, e.g. ACME")
        parser.add_argument("--role-code", required=True, help="DIP role code, e.g. SUP")
        parser.add_argument("--dip-id", required=True, help="10-character DIP ID")
        parser.add_argument("--environment", default=Environment.UIT, choices=Environment.values)
        parser.add_argument("--dip-base-url", required=True)
        parser.add_argument("--dcp-id", default="")
        parser.add_argument("--admin-username", required=True)
        parser.add_argument("--admin-email", required=True)
        parser.add_argument("--admin-password", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        actor = "manage.py onboard_tenant"
        try:
            with transaction.atomic():
                tenant = services.create_tenant(
                    slug=options["slug"], name=options["name"], actor=actor
                )
                with tenant_context(tenant.id):
                    identity = services.create_identity(
                        mpid=options["mpid"],
                        role_code=options["role_code"],
                        dip_id=options["dip_id"],
                        actor=actor,
                    )
                    services.create_connection(
                        identity=identity,
                        environment=options["environment"],
                        dip_base_url=options["dip_base_url"],
                        dcp_id=options["dcp_id"],
                        actor=actor,
                    )
                    services.create_user(
                        username=options["admin_username"],
                        email=options["admin_email"],
                        password=options["admin_password"],
                        roles=[Role.TENANT_ADMIN],
                        actor=actor,
                    )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(self.style.SUCCESS(f"Onboarded {tenant.name} ({tenant.id})"))
