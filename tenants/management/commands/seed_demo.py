"""The demo estate: two tenants, users for every role, identities, connections and channels.

Idempotent: a second run finds the demo in place and changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from argparse import ArgumentParser
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from core.tenancy import tenant_context
from tenants import certificates, services
from tenants.models import (
    CertificatePurpose,
    Connection,
    Direction,
    Environment,
    Role,
    StaffRole,
    Tenant,
)
from tenants.services import get_connection_api_key

DEMO_PASSWORD = "busbar-demo-pass"
DIP_BASE_URL = "https://127.0.0.1:8443"


@dataclass(frozen=True)
class DemoTenant:
    slug: str
    name: str
    identities: list[tuple[str, str, str]]  # MPID, role code, DIP ID
    users: list[tuple[str, list[str]]]  # username, roles
    channels: dict[str, list[str]]  # direction -> interface ids


DEMO = [
    DemoTenant(
        slug="acme",
        name="Acme Energy Supply",
        identities=[("ACME", "SUP", "1000000001")],
        users=[
            ("alice", [Role.TENANT_ADMIN, Role.CERTIFICATE_ADMIN, Role.APPROVER]),
            ("bob", [Role.MESSAGE_OPERATOR]),
            ("victor", [Role.VIEWER]),
            ("audrey", [Role.AUDITOR]),
        ],
        channels={
            Direction.INBOUND: ["IF-021", "IF-032", "IF-035", "IF-036", "IF-001"],
            Direction.OUTBOUND: ["IF-031", "IF-041"],
        },
    ),
    DemoTenant(
        slug="globex",
        name="Globex Smart Data",
        identities=[("GLBX", "SDS", "1000000002")],
        users=[("charlie", [Role.TENANT_ADMIN, Role.MESSAGE_OPERATOR])],
        channels={
            Direction.INBOUND: ["IF-033", "IF-041"],
            Direction.OUTBOUND: ["IF-021", "IF-034"],
        },
    ),
]


def demo_tenant_id(slug: str) -> uuid.UUID:
    """Fixed ids for the demo tenants, so a second run can find them under RLS."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://busbar.example/demo/{slug}")


class Command(BaseCommand):
    help = "Create (or leave in place) the demo tenants, users and channels."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dip-base-url", default=DIP_BASE_URL)
        parser.add_argument(
            "--dipsim-ca", type=Path, help="dipsim's CA folder: issue and install demo credentials"
        )
        parser.add_argument(
            "--dipsim-data", type=Path, help="dipsim's data folder: register the demo participants"
        )

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        self._tenants(options["dip_base_url"])
        self._staff()
        if options["dipsim_ca"] and options["dipsim_data"]:
            self._dipsim_credentials(options["dipsim_ca"], options["dipsim_data"])

    def _tenants(self, dip_base_url: str) -> None:
        user_model = get_user_model()
        for spec in DEMO:
            tenant_id = demo_tenant_id(spec.slug)
            with tenant_context(tenant_id):
                if Tenant.objects.filter(id=tenant_id).exists():
                    self.stdout.write(f"demo tenant {spec.slug} already present")
                    for connection in Connection.objects.all():  # dipsim may listen elsewhere now
                        services.update_connection(
                            connection=connection, dip_base_url=dip_base_url, actor="seed"
                        )
                    continue
            tenant = services.create_tenant(
                slug=spec.slug, name=spec.name, tenant_id=tenant_id, actor="seed"
            )
            with tenant_context(tenant.id):
                for mpid, role_code, dip_id in spec.identities:
                    identity = services.create_identity(
                        mpid=mpid, role_code=role_code, dip_id=dip_id, actor="seed"
                    )
                    connection = services.create_connection(
                        identity=identity,
                        environment=Environment.UIT,
                        dip_base_url=dip_base_url,
                        dcp_id="10000000DC",
                        api_key=f"dipsim-{mpid.lower()}-key",
                        actor="seed",
                    )
                    for direction, interface_ids in spec.channels.items():
                        for interface_id in interface_ids:
                            services.create_channel(
                                connection=connection,
                                interface_id=interface_id,
                                direction=direction,
                                expected_cadence=timedelta(hours=1),
                                actor="seed",
                            )
                for username, roles in spec.users:
                    user = user_model.objects.filter(username=username).first()
                    if user is None:
                        services.create_user(
                            username=username,
                            email=f"{username}@{spec.slug}.example",
                            password=DEMO_PASSWORD,
                            roles=roles,
                            actor="seed",
                        )
                    else:
                        services.add_member(user=user, roles=roles, actor="seed")
            self.stdout.write(f"created demo tenant {spec.slug}")

    def _dipsim_credentials(self, ca_dir: Path, data_dir: Path) -> None:
        """Register each demo identity with dipsim, and install certificates from dipsim's CA:
        its CA as the trust anchor, a signing and an mTLS certificate per connection. The key
        files dipsim writes live only in a temporary folder until they are encrypted here."""
        for spec in DEMO:
            with tenant_context(demo_tenant_id(spec.slug)):
                # acme's production connection (seed_operations) is not onboarded with dipsim:
                # it exists to show four-eyes replays.
                for connection in Connection.objects.select_related("identity").exclude(
                    environment=Environment.PRD
                ):
                    identity = connection.identity
                    dcp = []
                    if connection.dcp_id:
                        # Busbar sends as the tenant's connection provider (S1 names it), and
                        # the DIP refuses a DCP it does not know (MSG1011): register it first.
                        self._dipsim(
                            "dcp",
                            "add",
                            "--data-dir",
                            data_dir,
                            "--dip-id",
                            connection.dcp_id,
                            "--mpid",
                            "BUSB",
                            "--env",
                            connection.environment,
                            "--name",
                            "Busbar",
                        )
                        dcp = ["--dcp-id", connection.dcp_id]
                    self._dipsim(
                        "participant",
                        "add",
                        "--data-dir",
                        data_dir,
                        "--dip-id",
                        identity.dip_id,
                        "--mpid",
                        identity.mpid,
                        "--role",
                        identity.role_code,
                        "--api-key",
                        get_connection_api_key(connection=connection),
                        "--env",
                        connection.environment,
                        "--name",
                        spec.name,
                        *dcp,
                    )
                    if certificates.active_certificate(connection=connection, purpose="signing"):
                        continue
                    certificates.import_certificate(
                        connection=connection,
                        purpose=CertificatePurpose.TRUST_ANCHOR,
                        data=(ca_dir / "ca.crt").read_bytes(),
                        label="dipsim demo CA",
                        actor="seed",
                    )
                    with tempfile.TemporaryDirectory() as scratch:
                        for purpose in (CertificatePurpose.SIGNING, CertificatePurpose.MTLS):
                            out = Path(scratch) / purpose
                            self._dipsim(
                                "ca",
                                "issue",
                                "--dir",
                                ca_dir,
                                "--dip-id",
                                identity.dip_id,
                                "--kind",
                                "signing" if purpose == "signing" else "mtls",
                                "--out",
                                out,
                                "--days",
                                "90",
                            )
                            staged = certificates.import_certificate(
                                connection=connection,
                                purpose=purpose,
                                data=out.with_suffix(".crt").read_bytes()
                                + out.with_suffix(".key").read_bytes(),
                                label="dipsim demo",
                                actor="seed",
                            )
                            certificates.activate_first_certificate(
                                certificate=staged, actor="seed"
                            )
                    self.stdout.write(f"installed dipsim credentials for {identity}")

    def _dipsim(self, *args: object) -> None:
        command = [sys.executable, "-m", "dipsim", *(str(a) for a in args)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode:
            raise CommandError(f"{' '.join(command[2:4])} failed: {result.stderr or result.stdout}")

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
