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
from tenants import certificates, channel_changes, services
from tenants.demo_people import DEMO_PASSWORD, DEMO_PEOPLE
from tenants.models import (
    CertificatePurpose,
    ChannelStatus,
    Connection,
    DipIdentity,
    Direction,
    Environment,
    Role,
    StaffRole,
    Tenant,
)
from tenants.services import get_connection_api_key

DIP_BASE_URL = "https://127.0.0.1:8443"


@dataclass(frozen=True)
class DemoTenant:
    slug: str
    name: str
    identities: list[tuple[str, str, str]]  # MPID, role code, DIP ID
    channels: dict[str, list[str]]  # direction -> interface ids


DEMO = [
    DemoTenant(
        slug="acme",
        name="Acme Energy Supply",
        identities=[("ACME", "SUP", "1000000001")],
        channels={
            Direction.INBOUND: ["IF-021", "IF-032", "IF-035", "IF-036", "IF-001"],
            Direction.OUTBOUND: ["IF-031", "IF-041"],
        },
    ),
    DemoTenant(
        slug="globex",
        name="Globex Smart Data",
        identities=[("GLBX", "SDS", "1000000002")],
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
                    if spec.slug == "acme":  # a demo seeded before this part existed gets it too
                        self._production_change_awaiting_approval(dip_base_url)
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
                for person in DEMO_PEOPLE:
                    if person.tenant != spec.slug:
                        continue
                    username, roles = person.username, [Role(role).value for role in person.roles]
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
                if spec.slug == "acme":
                    self._production_change_awaiting_approval(dip_base_url)
            self.stdout.write(f"created demo tenant {spec.slug}")

    def _production_change_awaiting_approval(self, dip_base_url: str) -> None:
        """acme's production connection (not yet connected: the simulator plays UIT only) with a
        channel whose going live bob has proposed and an approver (alice) has still to approve.
        Left alone when acme already has a production connection (idempotent)."""
        identity = DipIdentity.objects.get(mpid="ACME", role_code="SUP")
        if Connection.objects.filter(identity=identity, environment=Environment.PRD).exists():
            return
        connection = services.create_connection(
            identity=identity,
            environment=Environment.PRD,
            dip_base_url=dip_base_url,
            dcp_id="10000000DC",
            api_key="acme-production-key",
            actor="seed",
        )
        channel = services.create_channel(
            connection=connection, interface_id="IF-021", direction=Direction.INBOUND, actor="seed"
        )
        channel_changes.propose_channel_change(
            channel=channel,
            changes={"status": ChannelStatus.LIVE, "expected_cadence": 3600},
            reason="UIT sign-off complete: take production IF-021 live with an hourly cadence",
            user=get_user_model().objects.get(username="bob"),
        )

    def _dipsim_credentials(self, ca_dir: Path, data_dir: Path) -> None:
        """Register each demo identity with dipsim, and install certificates from dipsim's CA:
        its CA as the trust anchor, a signing and an mTLS certificate per connection. The key
        files dipsim writes live only in a temporary folder until they are encrypted here."""
        for spec in DEMO:
            with tenant_context(demo_tenant_id(spec.slug)):
                # The simulator plays UIT: production connections stay unconnected in the demo.
                uit = Connection.objects.filter(environment=Environment.UIT)
                for connection in uit.select_related("identity"):
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
        for person in DEMO_PEOPLE:
            if person.tenant is not None:
                continue
            staff = user_model.objects.filter(username=person.username).first()
            if staff is None:
                staff = user_model(
                    username=person.username,
                    email=f"{person.username}@busbar.example",
                    is_staff=True,
                )
                staff.set_password(DEMO_PASSWORD)
                staff.save()
            for staff_role in person.roles:
                staff.groups.add(Group.objects.get(name=StaffRole(staff_role)))
