"""Provider admins onboard a tenant: the tenant, one DIP identity and connection, its first admin."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from tenants import services
from tenants.models import Environment


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
        fields = (
            "slug",
            "name",
            "mpid",
            "role_code",
            "dip_id",
            "environment",
            "dip_base_url",
            "dcp_id",
            "admin_username",
            "admin_email",
            "admin_password",
        )
        try:
            tenant = services.onboard_tenant(
                **{field: options[field] for field in fields}, actor="manage.py onboard_tenant"
            )
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from exc
        self.stdout.write(self.style.SUCCESS(f"Onboarded {tenant.name} ({tenant.id})"))
