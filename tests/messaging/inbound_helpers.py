"""Shared set-up for the inbound tests: acme's supplier connection wired to a real dipsim (its
CA as trust anchor, signing and mTLS certificates it issued), and signed pushes made with
``messaging.dip.signing`` keys from ``tests.pki``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from core.tenancy import tenant_context
from messaging.dip import build_common_block, mpan_block, sign_request
from tenants import certificates, services
from tenants.models import Channel, Connection
from tests.messaging.conftest import SDS_DIP_ID, SUP_API_KEY, SUP_DIP_ID, Dipsim
from tests.messaging.test_dip_client import if021
from tests.pki import TestCA, key_pem, new_key, pem

BASE_URL = "https://ingest.busbar.test:8446"


def sup_connection(tenant_id: object, dipsim: Dipsim) -> Connection:
    """acme's SUP connection (from ``world``) pointed at dipsim with dipsim-issued credentials."""
    with tenant_context(tenant_id):
        connection = Connection.objects.select_related("identity").get(identity__dip_id=SUP_DIP_ID)
        services.update_connection(
            connection=connection, dip_base_url=dipsim.base_url, api_key=SUP_API_KEY, actor="t"
        )
        certificates.import_certificate(
            connection=connection,
            purpose="trust_anchor",
            data=dipsim.ca_cert.read_bytes(),
            actor="pytest",
        )
        for purpose, (cert, key) in (
            ("signing", (dipsim.sup.sign_cert, dipsim.sup.sign_key)),
            ("mtls", (dipsim.sup.mtls_cert, dipsim.sup.mtls_key)),
        ):
            staged = certificates.import_certificate(
                connection=connection,
                purpose=purpose,
                data=cert.read_bytes() + key.read_bytes(),
                actor="pytest",
            )
            certificates.activate_first_certificate(certificate=staged, actor="pytest")
        return connection


class DipSigner:
    """A DIP signing certificate from a test CA that a connection trusts."""

    def __init__(self, ca: TestCA | None = None) -> None:
        self.ca = ca or TestCA.create("DIP test CA")
        self.key = new_key()
        self.certificate_pem = pem(self.ca.issue(self.key.public_key(), common_name="DIP signing"))

    def headers(self, url: str, body: bytes, *, now: dt.datetime | None = None) -> dict[str, str]:
        from messaging.dip.signing import load_private_key

        return sign_request(
            method="POST",
            url=url,
            body=body,
            private_key=load_private_key(key_pem(self.key)),
            certificate_pem=self.certificate_pem,
            now=now,
        )


def trust(tenant_id: object, connection: Connection, ca: TestCA) -> None:
    with tenant_context(tenant_id):
        certificates.import_certificate(
            connection=connection, purpose="trust_anchor", data=pem(ca.cert), actor="pytest"
        )


def inbound_channel(tenant_id: object, interface_id: str = "IF-021") -> Channel:
    with tenant_context(tenant_id):
        return Channel.objects.select_related("connection__identity").get(
            interface_id=interface_id, direction="inbound"
        )


_counter = iter(range(10**9))


def pushed_if021(
    *,
    recipient: str = SUP_DIP_ID,
    transaction_id: str | None = None,
    mpan: str = "2000056535971",
    environment: str = "UIT",
) -> dict[str, Any]:
    """An IF-021 as the DIP pushes it: the SDS's message with D0 filled in."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    n = next(_counter)
    common = build_common_block(
        interface_id="IF-021",
        event="ActivePower",
        environment=environment,
        sender_dip_id=SDS_DIP_ID,
        sender_role="SDS",
        primary_recipients=[recipient],
        sent_at=now,
        correlation_id=f"CI-{n}",
        m0=mpan_block(mpan_core=mpan, distributor_dip_id="2000000020", gsp_group_id="_H"),
    )
    txn = transaction_id or f"T-IF-021-{SDS_DIP_ID}-SDS-{now:%Y%m%d}-{n:016X}"
    common["D0"] = {
        "transactionID": txn,
        "transactionTimestamp": now.strftime("%Y-%m-%dT%H:%M:%S+00:00"),
        "publicationID": "PUB-021",
        "initialCorrelationID": None,
        "replayIndicator": False,
        "serviceTicketURL": None,
    }
    custom = if021()["CustomBlock"]
    for i, period in enumerate(
        custom["B900"]["settlementDayConsumptionPeriods"][0]["consumptionPeriods"]
    ):
        period["v"] = f"{(i * 37 + n) % 900 / 7:.3f}"  # varied, so bytes do not repeat
    return {"payload": {"CommonBlock": common, "CustomBlock": custom}}


def body_of(*messages: dict[str, Any]) -> bytes:
    return json.dumps(list(messages), separators=(",", ":")).encode()
