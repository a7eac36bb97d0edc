"""A connection's certificates at work against a real dipsim over mutual TLS: the DIP client built
from the inventory, the rotation canary, and a rotation in the middle of continuous traffic."""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from core.tenancy import tenant_context
from messaging import credentials, exchanges
from messaging.dip import Action, DipTransportError
from messaging.models import DipExchange
from tenants import certificates, services
from tenants.certificates import CertificateError
from tenants.models import Certificate, CertificateStatus, Connection
from tests.messaging.conftest import REPO_ROOT, SDS_API_KEY, SDS_DIP_ID, Dipsim, dipsim_cli
from tests.messaging.test_dip_client import if021


def issue(dipsim: Dipsim, out: Path, *, kind: str, dip_id: str = SDS_DIP_ID) -> bytes:
    """A fresh certificate and key from dipsim's CA, as PEM text (certificate then key)."""
    ca_dir = dipsim.ca_cert.parent
    subprocess.run(
        dipsim_cli(
            "ca", "issue", "--dir", ca_dir, "--dip-id", dip_id, "--kind", kind, "--out", out
        ),
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    return out.with_suffix(".crt").read_bytes() + out.with_suffix(".key").read_bytes()


def fingerprint(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def sds_connection(tenant_id: object, dipsim: Dipsim) -> Connection:
    """The tenant's SDS identity wired to dipsim, with active signing and mTLS certificates."""
    with tenant_context(tenant_id):
        identity = services.create_identity(mpid="SDSA", role_code="SDS", dip_id=SDS_DIP_ID)
        connection = services.create_connection(
            identity=identity, environment="SIT", dip_base_url=dipsim.base_url, api_key=SDS_API_KEY
        )
        certificates.import_certificate(
            connection=connection,
            purpose="trust_anchor",
            data=dipsim.ca_cert.read_bytes(),
            actor="pytest",
        )
        for purpose, creds in (
            ("signing", (dipsim.sds.sign_cert, dipsim.sds.sign_key)),
            ("mtls", (dipsim.sds.mtls_cert, dipsim.sds.mtls_key)),
        ):
            staged = certificates.import_certificate(
                connection=connection,
                purpose=purpose,
                data=creds[0].read_bytes() + creds[1].read_bytes(),
                actor="pytest",
            )
            certificates.activate_first_certificate(certificate=staged, actor="pytest")
        return connection


def test_the_client_uses_the_active_certificates_and_says_which_signed(world, dipsim):
    connection = sds_connection(world.globex.id, dipsim)
    with (
        tenant_context(world.globex.id),
        credentials.dip_client_for(connection=connection) as client,
    ):
        result = client.submit("IF-021", [if021()])
    assert result.status == 201, result.response_body
    assert result.signing_certificate_fingerprint == fingerprint(dipsim.sds.sign_cert.read_bytes())
    assert result.mtls_certificate_fingerprint == fingerprint(dipsim.sds.mtls_cert.read_bytes())


def test_a_missing_certificate_is_named(world, dipsim):
    with tenant_context(world.acme.id):
        connection = Connection.objects.get()
        with pytest.raises(CertificateError, match="no active signing certificate"):
            credentials.dip_client_for(connection=connection)


def test_a_good_candidate_passes_the_canary_and_is_rotated_in(committed_world, dipsim, tmp_path):
    world = committed_world
    connection = sds_connection(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        candidate = certificates.import_certificate(
            connection=connection,
            purpose="signing",
            data=issue(dipsim, tmp_path / "next", kind="signing"),
            actor="pytest",
        )
        result = credentials.dip_canary(candidate)
        assert result.ok, result.detail
        assert result.detail.startswith("replay canary: 200")
        active = credentials.rotate_certificate(certificate_id=str(candidate.id), actor="alice")
        assert active is not None
        assert active.id == candidate.id
        retiring = Certificate.objects.get(purpose="signing", status=CertificateStatus.RETIRING)
        assert retiring.fingerprint_sha256 == fingerprint(dipsim.sds.sign_cert.read_bytes())


@pytest.mark.parametrize(
    ("kind", "dip_id", "why"),
    [
        ("signing", "1000000001", "another participant's signing certificate"),
        ("mtls", "1000000001", "another participant's mTLS certificate"),
    ],
)
def test_a_bad_candidate_fails_the_canary_and_nothing_changes(
    committed_world, dipsim, tmp_path, kind, dip_id, why
):
    world = committed_world
    connection = sds_connection(world.globex.id, dipsim)
    with tenant_context(world.globex.id):
        candidate = certificates.import_certificate(
            connection=connection,
            purpose=kind,
            data=issue(dipsim, tmp_path / "wrong", kind=kind, dip_id=dip_id),
            actor="pytest",
        )
        assert (
            credentials.rotate_certificate(certificate_id=str(candidate.id), actor="alice") is None
        )
        candidate.refresh_from_db()
        assert (candidate.status, candidate.last_canary_ok) == (CertificateStatus.STAGED, False), (
            why
        )
        assert candidate.last_canary_detail
        active = certificates.active_certificate(connection=connection, purpose=kind)
        assert active is not None
        assert active.id != candidate.id


@dataclass
class Sent:
    references: list[str]
    fingerprint: str
    started: float
    finished: float
    accepted: list[str] = field(default_factory=list)


def test_rotation_during_continuous_traffic_loses_and_duplicates_nothing(
    committed_db, dipsim, tmp_path
):
    """A sender keeps submitting (through the pooled client, as a worker would) while the signing
    certificate is rotated: every message is accepted exactly once, and nothing starts after the
    cut-over signed with the old key."""
    from tests.conftest import build_world

    world = build_world()
    connection = sds_connection(world.globex.id, dipsim)
    old_fingerprint = fingerprint(dipsim.sds.sign_cert.read_bytes())
    batches: list[Sent] = []
    problems: list[str] = []
    cut_over_at: list[float] = []

    def sender() -> None:
        try:
            # Until four batches have started after the cut-over (and twelve in all).
            while (
                not cut_over_at
                or len(batches) < 12
                or sum(b.started > cut_over_at[0] for b in batches) < 4
            ):
                messages = [if021() for _ in range(5)]
                references = [m["CommonBlock"]["S1"]["senderUniqueReference"] for m in messages]
                started = time.monotonic()
                for attempt in range(1, 6):
                    try:
                        with tenant_context(world.globex.id):
                            result = credentials.submit_batch(
                                connection=connection, interface_id="IF-021", messages=messages
                            )
                        break
                    except DipTransportError as exc:
                        if not exc.retryable or attempt == 5:
                            raise  # a batch that never went is a failure, never the last result
                        time.sleep(0.2)  # a retry's back-off, as a worker's would be
                sent = Sent(
                    references, result.signing_certificate_fingerprint, started, time.monotonic()
                )
                sent.accepted = [
                    o.sender_reference for o in result.outcomes if o.action is Action.ACCEPTED
                ]
                if result.status != 201:
                    problems.append(f"batch refused: {result.status} {result.reason}")
                batches.append(sent)
        except Exception as exc:
            problems.append(repr(exc))
        finally:
            from django.db import connections

            connections.close_all()

    thread = threading.Thread(target=sender)
    thread.start()
    while len(batches) < 4 and thread.is_alive():
        time.sleep(0.05)
    with tenant_context(world.globex.id):
        candidate = certificates.import_certificate(
            connection=connection,
            purpose="signing",
            data=issue(dipsim, tmp_path / "rotated", kind="signing"),
            actor="pytest",
        )
        active = credentials.rotate_certificate(certificate_id=str(candidate.id), actor="alice")
    cut_over = time.monotonic()
    cut_over_at.append(cut_over)
    assert active is not None
    thread.join(timeout=120)

    assert problems == []
    sent_references = [r for batch in batches for r in batch.references]
    accepted = [r for batch in batches for r in batch.accepted]
    assert len(sent_references) >= 60
    assert sorted(accepted) == sorted(sent_references)  # none lost
    assert len(set(accepted)) == len(accepted)  # none twice
    after = [b for b in batches if b.started > cut_over]
    before = [b for b in batches if b.finished < cut_over]
    assert after
    assert before
    assert {b.fingerprint for b in after} == {active.fingerprint_sha256}
    assert {b.fingerprint for b in before} == {old_fingerprint}
    # And the DIP's own record agrees: it holds each of these messages exactly once.
    held = httpx.get(
        f"{dipsim.admin_url}/admin/messages", params={"sender": SDS_DIP_ID, "limit": 5000}
    ).json()
    counts = Counter(m["senderUniqueReference"] for m in held)
    assert {counts[r] for r in sent_references} == {1}
    # Busbar's own evidence answers both questions: which certificate signed a message, and
    # what a certificate signed (what revoking it would call into question).
    with tenant_context(world.globex.id):
        first, last = sent_references[0], sent_references[-1]
        assert [
            e.signing_certificate_fingerprint
            for e in exchanges.find_exchanges_for_message(reference=first)
        ] == [old_fingerprint]
        assert [
            e.signing_certificate_fingerprint
            for e in exchanges.find_exchanges_for_message(reference=last)
        ] == [active.fingerprint_sha256]
        old_certificate = Certificate.objects.get(fingerprint_sha256=old_fingerprint)
        signed = {
            cert.fingerprint_sha256: exchanges.count_messages_with_certificate(certificate=cert)
            for cert in (old_certificate, active)
        }
    assert signed == {
        fp: sum(len(b.references) for b in batches if b.fingerprint == fp) for fp in signed
    }
    assert sum(signed.values()) == len(sent_references)
    with tenant_context(world.globex.id):
        canaries = DipExchange.objects.filter(operation="canary")
        assert [(c.http_status, c.signing_certificate_fingerprint) for c in canaries] == [
            (200, active.fingerprint_sha256)
        ]
