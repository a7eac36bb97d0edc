"""The demo estate: two tenants, users for every role, identities, connections and channels.

Idempotent: a second run finds the demo in place and changes nothing.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from core.tenancy import tenant_context
from tenants import services
from tenants.models import Direction, Environment, Role, StaffRole, Tenant

DEMO_PASSWORD = "busbar-demo-pass"
DIP_BASE_URL = "https://127.0.0.1:8443"

DEMO = [
    {
        "slug": "acme",
        "name": "Acme Energy Supply",
        "identities": [("ACME", "SUP", "1000000001")],
        "users": [
            ("alice", [Role.TENANT_ADMIN, Role.CERTIFICATE_ADMIN, Role.APPROVER]),
            ("bob", [Role.MESSAGE_OPERATOR]),
            ("victor", [Role.VIEWER]),
            ("audrey", [Role.AUDITOR]),
        ],
        "inbound": ["IF-021", "IF-032", "IF-035", "IF-036", "IF-001"],
        "outbound": ["IF-031", "IF-041"],
    },
    {
        "slug": "globex",
        "name": "Globex Smart Data",
        "identities": [("GLBX", "SDS", "1000000002")],
        "users": [("charlie", [Role.TENANT_ADMIN, Role.MESSAGE_OPERATOR])],
        "inbound": ["IF-033", "IF-041"],
        "outbound": ["IF-021", "IF-034"],
    },
]


def demo_tenant_id(slug: str) -> uuid.UUID:
    """Fixed ids for the demo tenants, so a second run can find them under RLS."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://busbar.example/demo/{slug}")


class Command(BaseCommand):
    help = "Create (or leave in place) the demo tenants, users and channels."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        for spec in DEMO:
            tenant_id = demo_tenant_id(spec["slug"])
            with tenant_context(tenant_id):
                if Tenant.objects.filter(id=tenant_id).exists():
                    self.stdout.write(f"demo tenant {spec['slug']} already present")
                    continue
            tenant = services.create_tenant(
                slug=spec["slug"], name=spec["name"], tenant_id=tenant_id, actor="seed"
            )
            with tenant_context(tenant.id):
                for mpid, role_code, dip_id in spec["identities"]:
                    identity = services.create_identity(
                        mpid=mpid, role_code=role_code, dip_id=dip_id, actor="seed"
                    )
                    connection = services.create_connection(
                        identity=identity,
                        environment=Environment.UIT,
                        dip_base_url=DIP_BASE_URL,
                        dcp_id="10000000DC",
                        api_key=f"dipsim-{mpid.lower()}-key",
                        actor="seed",
                    )
                    for direction in (Direction.INBOUND, Direction.OUTBOUND):
                        for interface_id in spec[direction]:
                            services.create_channel(
                                connection=connection,
                                interface_id=interface_id,
                                direction=direction,
                                expected_cadence=timedelta(hours=1),
                                actor="seed",
                            )
                for username, roles in spec["users"]:
                    user = user_model.objects.filter(username=username).first()
                    if user is None:
                        services.create_user(
                            username=username,
                            email=f"{username}@{spec['slug']}.example",
                            password=DEMO_PASSWORD,
                            roles=roles,
                            actor="seed",
                        )
                    else:
                        services.add_member(user=user, roles=roles, actor="seed")
            self.stdout.write(f"created demo tenant {spec['slug']}")
        self._staff()

    def _staff(self) -> None:
        user_model = get_user_model()
        for role in StaffRole:
            Group.objects.get_or_create(name=role.value)
        sam = user_model.objects.filter(username="sam").first()
        if sam is None:
            sam = user_model(username="sam", email="sam@busbar.example", is_staff=True)
            sam.set_password(DEMO_PASSWORD)
            sam.save()
        sam.groups.add(Group.objects.get(name=StaffRole.PROVIDER_SUPPORT))
