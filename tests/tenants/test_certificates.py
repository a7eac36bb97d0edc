"""Certificates: obtaining, checking, rotating with a canary, revoking, expiry warnings."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from django.db import IntegrityError, connection, transaction

from core.tenancy import tenant_context
from tenants import certificates as certs
from tenants.certificates import CanaryResult, CertificateError
from tenants.models import (
    Certificate,
    CertificateStatus,
    Connection,
    Notification,
)
from tests.pki import TestCA, key_pem, new_key, p12, pem


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture
def acme(world):
    with tenant_context(world.acme.id):
        yield Connection.objects.get()


def staged(ca: TestCA, connection: Connection, *, purpose: str = "signing", **issue) -> Certificate:
    key = new_key()
    bundle = pem(ca.issue(key.public_key(), **issue)) + key_pem(key)
    return certs.import_certificate(
        connection=connection, purpose=purpose, data=bundle, actor="alice"
    )


def test_a_generated_key_is_encrypted_at_once_and_its_csr_passes_the_profile(acme):
    requested = certs.generate_key_and_csr(
        connection=acme,
        purpose="mtls",
        common_name="dip.acme.example",
        organization="Acme",
        key_size=2048,
        actor="alice",
    )
    assert requested.status == CertificateStatus.REQUESTED
    csr = x509.load_pem_x509_csr(requested.csr_pem.encode())
    assert csr.is_signature_valid
    assert csr.subject.rfc4514_string() == "CN=dip.acme.example,O=Acme,C=GB"
    assert csr.public_key().key_size == 2048
    with connection.cursor() as cursor:
        cursor.execute("SELECT private_key_encrypted FROM tenants_certificate")
        stored = cursor.fetchone()[0]
    assert stored.startswith("v1.")
    assert "PRIVATE KEY" not in stored


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"common_name": "not a host name"}, "is not a DNS name"),
        ({"country": "UK1"}, "two-letter code"),
        ({"organization": " "}, "organisation is required"),
        ({"key_size": 1024}, "at least 2048 bits"),
        ({"purpose": "trust_anchor"}, "signing or mTLS"),
    ],
)
def test_the_csr_profile_refuses_bad_subjects(acme, fields, message):
    arguments = {
        "connection": acme,
        "purpose": "signing",
        "common_name": "dip.acme.example",
        "organization": "Acme",
        "key_size": 2048,
        "actor": "alice",
        **fields,
    }
    with pytest.raises(CertificateError, match=message):
        certs.generate_key_and_csr(**arguments)
    assert not Certificate.objects.exists()


def test_a_signed_certificate_is_matched_to_its_pending_key(acme, ca):
    requested = certs.generate_key_and_csr(
        connection=acme,
        purpose="signing",
        common_name="dip.acme.example",
        organization="Acme",
        key_size=2048,
        actor="alice",
    )
    csr = x509.load_pem_x509_csr(requested.csr_pem.encode())
    stranger = ca.issue(new_key().public_key())
    with pytest.raises(CertificateError, match="does not match its private key"):
        certs.import_signed_certificate(certificate=requested, pem=pem(stranger), actor="alice")
    signed = ca.issue(csr.public_key())
    staged_cert = certs.import_signed_certificate(
        certificate=requested, pem=pem(signed) + pem(ca.cert), actor="alice"
    )
    assert staged_cert.status == CertificateStatus.STAGED
    assert staged_cert.fingerprint_sha256 == signed.fingerprint(certs.hashes.SHA256()).hex()
    assert staged_cert.issuer == ca.cert.subject.rfc4514_string()
    assert "BEGIN CERTIFICATE" in staged_cert.chain_pem
    material = certs.load_key_material(certificate=staged_cert)
    assert material.private_key.public_key().public_numbers() == csr.public_key().public_numbers()
    assert "PRIVATE" not in repr(material)


def test_a_pkcs12_bundle_imports_with_its_password(acme, ca):
    key = new_key()
    bundle = p12(key, ca.issue(key.public_key()), "s3cret-pass")
    with pytest.raises(CertificateError, match="wrong password"):
        certs.import_certificate(
            connection=acme, purpose="mtls", data=bundle, password="nope", actor="alice"
        )
    imported = certs.import_certificate(
        connection=acme, purpose="mtls", data=bundle, password="s3cret-pass", actor="alice"
    )
    assert imported.status == CertificateStatus.STAGED
    assert imported.key_type == "RSA"
    assert imported.key_size == 2048


@pytest.mark.parametrize(
    ("issue", "purpose", "message"),
    [
        (
            {
                "days": -1,
                "not_before": datetime.now(UTC) - timedelta(days=10),
                "not_after": datetime.now(UTC) - timedelta(days=1),
            },
            "signing",
            "expired on",
        ),
        ({"not_before": datetime.now(UTC) + timedelta(days=2)}, "signing", "not valid until"),
        ({"client_auth": False}, "mtls", "lacks TLS client authentication"),
        ({"digital_signature": False}, "signing", "does not allow digital signatures"),
    ],
)
def test_unusable_certificates_are_refused_with_the_reason(acme, ca, issue, purpose, message):
    with pytest.raises(CertificateError, match=message):
        staged(ca, acme, purpose=purpose, **issue)
    assert not Certificate.objects.exists()


def test_a_key_and_certificate_that_do_not_match_are_refused(acme, ca):
    bundle = pem(ca.issue(new_key().public_key())) + key_pem(new_key())
    with pytest.raises(CertificateError, match="does not match its private key"):
        certs.import_certificate(connection=acme, purpose="signing", data=bundle, actor="alice")


def test_a_weak_key_and_junk_are_refused(acme, ca):
    weak = new_key(1024)
    with pytest.raises(CertificateError, match="1024 bits"):
        certs.import_certificate(
            connection=acme,
            purpose="signing",
            data=pem(ca.issue(weak.public_key())) + key_pem(weak),
            actor="alice",
        )
    with pytest.raises(CertificateError, match="PKCS#12"):
        certs.import_certificate(connection=acme, purpose="signing", data=b"junk", actor="alice")
    with pytest.raises(CertificateError, match="must come with its private key"):
        certs.import_certificate(
            connection=acme,
            purpose="signing",
            data=pem(ca.issue(new_key().public_key())),
            actor="alice",
        )


def test_trust_anchors_are_active_at_once_and_carry_no_key(acme, ca):
    anchor = certs.import_certificate(
        connection=acme, purpose="trust_anchor", data=pem(ca.cert), actor="alice"
    )
    second = certs.import_certificate(
        connection=acme,
        purpose="trust_anchor",
        data=pem(TestCA.create("Next CA").cert),
        actor="alice",
    )
    assert anchor.status == second.status == CertificateStatus.ACTIVE
    assert anchor.private_key_encrypted == ""
    with pytest.raises(CertificateError, match="already in the connection's inventory"):
        certs.import_certificate(
            connection=acme, purpose="trust_anchor", data=pem(ca.cert), actor="a"
        )


def test_rotation_cuts_over_after_a_good_canary_and_keeps_the_old_key_for_the_overlap(acme, ca):
    first = certs.activate_first_certificate(certificate=staged(ca, acme), actor="alice")
    second = staged(ca, acme)
    canaried = []

    def canary(candidate: Certificate) -> CanaryResult:
        canaried.append(candidate.id)
        return CanaryResult(ok=True, detail="201 T-IF-031-canary")

    now = datetime.now(UTC)
    active = certs.rotate_certificate(
        certificate=second, canary=canary, actor="alice", overlap=timedelta(hours=2), now=now
    )
    first.refresh_from_db()
    assert canaried == [second.id]
    assert active.status == CertificateStatus.ACTIVE
    active.refresh_from_db()
    assert (active.last_canary_ok, active.last_canary_detail) == (True, "201 T-IF-031-canary")
    assert (first.status, first.overlap_until) == (
        CertificateStatus.RETIRING,
        now + timedelta(hours=2),
    )
    assert certs.active_certificate(connection=acme, purpose="signing").id == second.id
    assert certs.load_key_material(certificate=first)  # in-flight retries may still use it
    assert certs.retire_overlapped_certificates(now=now + timedelta(hours=1)) == 0
    assert certs.retire_overlapped_certificates(now=now + timedelta(hours=3)) == 1
    first.refresh_from_db()
    assert first.status == CertificateStatus.RETIRED
    with pytest.raises(CertificateError, match="retired"):
        certs.load_key_material(certificate=first)


def test_a_failed_canary_leaves_the_current_certificate_in_use(acme, ca):
    first = certs.activate_first_certificate(certificate=staged(ca, acme), actor="alice")
    second = staged(ca, acme)
    with pytest.raises(CertificateError, match=r"canary failed.*MSG1009"):
        certs.rotate_certificate(
            certificate=second,
            actor="alice",
            canary=lambda c: CanaryResult(ok=False, detail="400 MSG1009 sender DIP ID invalid"),
        )
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.status == CertificateStatus.ACTIVE
    assert (second.status, second.last_canary_ok) == (CertificateStatus.STAGED, False)
    assert "MSG1009" in second.last_canary_detail


def test_the_database_allows_one_active_key_per_purpose(acme, ca):
    certs.activate_first_certificate(certificate=staged(ca, acme), actor="alice")
    other = staged(ca, acme)
    with pytest.raises(CertificateError, match="rotate instead"):
        certs.activate_first_certificate(certificate=other, actor="alice")
    other.status = CertificateStatus.ACTIVE
    with pytest.raises(IntegrityError, match="certificate_one_active_key"), transaction.atomic():
        other.save()


def test_revocation_stops_use_at_once(acme, ca):
    active = certs.activate_first_certificate(certificate=staged(ca, acme), actor="alice")
    with pytest.raises(CertificateError, match="say why"):
        certs.revoke_certificate(certificate=active, reason=" ", actor="alice")
    revoked = certs.revoke_certificate(certificate=active, reason="key compromise", actor="alice")
    assert revoked.status == CertificateStatus.REVOKED
    assert certs.active_certificate(connection=acme, purpose="signing") is None
    with pytest.raises(CertificateError, match="revoked"):
        certs.load_key_material(certificate=revoked)


def expiring(ca: TestCA, connection: Connection, *, days: int) -> Certificate:
    now = datetime.now(UTC)
    key = new_key()
    cert = ca.issue(
        key.public_key(), not_before=now - timedelta(days=30), not_after=now + timedelta(days=days)
    )
    imported = certs.import_certificate(
        connection=connection, purpose="signing", data=pem(cert) + key_pem(key), actor="alice"
    )
    return certs.activate_first_certificate(certificate=imported, actor="alice")


def test_expiry_warnings_follow_the_schedule_with_a_controlled_clock(
    acme, ca, mailoutbox, django_capture_on_commit_callbacks
):
    certificate = expiring(ca, acme, days=61)
    start = datetime.now(UTC)

    def check(day: float) -> list[str]:
        with django_capture_on_commit_callbacks(execute=True):
            return [
                n.title for n in certs.check_certificate_expiry(now=start + timedelta(days=day))
            ]

    assert check(0) == []  # 61 days left: not yet
    first = check(2)  # 59 days left
    assert len(first) == 1
    assert "expires in 58 days" in first[0]  # a whisker under 59 whole days
    assert check(2.5) == []  # same interval: no repeat
    assert len(check(16)) == 1  # a fortnight later
    assert check(23) == []
    assert len(check(48)) == 1  # 13 days left: weekly now
    assert check(52) == []
    assert len(check(55)) == 1
    assert len(check(56)) == 1  # last week: daily
    assert len(check(57)) == 1
    expired = check(62)
    assert expired == [f"Message signing certificate for {acme.identity} UIT has EXPIRED"]
    assert len(check(63)) == 1  # still in use: daily
    notifications = Notification.objects.filter(object_id=str(certificate.id))
    assert notifications.count() == 8
    assert {n.role for n in notifications} == {"certificate_admin"}
    assert notifications.filter(level="critical").count() >= 4
    # alice is acme's certificate admin; bob (operator) gets nothing.
    assert len(mailoutbox) == 8
    assert {tuple(m.to) for m in mailoutbox} == {("alice@acme.example",)}
    assert "Fingerprint (SHA-256)" in mailoutbox[0].body


def test_retired_and_revoked_certificates_are_not_nagged_about(acme, ca):
    certificate = expiring(ca, acme, days=10)
    certs.revoke_certificate(certificate=certificate, reason="replaced early", actor="alice")
    assert certs.check_certificate_expiry(now=datetime.now(UTC)) == []


def test_no_key_material_leaves_through_serialised_fields(acme, ca):
    certificate = staged(ca, acme)
    text = " ".join(str(getattr(certificate, f.attname)) for f in Certificate._meta.concrete_fields)
    assert "PRIVATE KEY" not in text
    der_key = certs.load_key_material(certificate=certificate).private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert der_key.hex() not in text


SECOND = 1 / 86400  # in days


@pytest.mark.parametrize(
    ("days_left", "in_use", "interval"),
    [
        (60 + SECOND, True, None),  # more than 60 days: not yet
        (60, True, 14),  # from 60 days: fortnightly
        (14 + SECOND, True, 14),
        (14, True, 7),  # from 14 days: weekly
        (7 + SECOND, True, 7),
        (7, True, 1),  # in the last week: daily, in use or not
        (7, False, 1),
        (SECOND, False, 1),
        (0, True, 1),  # expired and still in use: daily
        (-30, True, 1),
        (0, False, 7),  # expired and not in use (staged, retiring): weekly
        (-30, False, 7),
    ],
)
def test_every_expiry_boundary_is_pinned_on_both_sides(days_left, in_use, interval):
    expected = None if interval is None else timedelta(days=interval)
    assert certs.warning_interval(days_left=days_left, in_use=in_use) == expected


NOW = datetime(2026, 11, 27, 9, tzinfo=UTC)


def certificate_at(*, status: str, days_left: float, warned_days_ago: float | None) -> Certificate:
    """An unsaved certificate: ``warning_due`` reads only these three fields."""
    return Certificate(
        tenant_id=uuid.uuid4(),
        status=status,
        not_after=NOW + timedelta(days=days_left),
        last_expiry_warning_at=None
        if warned_days_ago is None
        else NOW - timedelta(days=warned_days_ago),
    )


@pytest.mark.parametrize(
    ("status", "due_after_a_day", "due_after_a_week"),
    [
        (CertificateStatus.ACTIVE, True, True),  # in use: daily
        (CertificateStatus.STAGED, False, True),  # not in use: weekly
        (CertificateStatus.RETIRING, False, True),
        (CertificateStatus.RETIRED, False, False),  # never
        (CertificateStatus.REVOKED, False, False),
        (CertificateStatus.REQUESTED, False, False),
    ],
)
def test_an_expired_certificate_is_warned_about_daily_only_while_it_is_in_use(
    status, due_after_a_day, due_after_a_week
):
    def due(warned_days_ago: float) -> bool:
        cert = certificate_at(status=status, days_left=-3, warned_days_ago=warned_days_ago)
        return certs.warning_due(cert, now=NOW)

    assert due(1) is due_after_a_day
    assert due(7) is due_after_a_week


@pytest.mark.parametrize(("days_left", "interval"), [(59, 14), (13, 7), (6, 1)])
def test_a_warning_repeats_at_its_interval_less_an_hours_slack(days_left, interval):
    hour = 1 / 24

    def due(warned_days_ago: float) -> bool:
        cert = certificate_at(
            status=CertificateStatus.ACTIVE, days_left=days_left, warned_days_ago=warned_days_ago
        )
        return certs.warning_due(cert, now=NOW)

    assert due(interval - hour) is True
    assert due(interval - hour - SECOND) is False
    assert certs.warning_due(
        certificate_at(status=CertificateStatus.ACTIVE, days_left=days_left, warned_days_ago=None),
        now=NOW,
    )
    assert not certs.warning_due(
        certificate_at(
            status=CertificateStatus.ACTIVE, days_left=60 + SECOND, warned_days_ago=None
        ),
        now=NOW,
    )


def test_a_staged_certificate_that_expires_is_warned_about_weekly_not_daily(acme, ca):
    """Through the job and the database: staged (never in use) and expired, it is not worth a
    daily alarm; the active one beside it is."""
    now = datetime.now(UTC)
    active = expiring(ca, acme, days=5)
    spare = staged(ca, acme, not_before=now - timedelta(days=30), not_after=now + timedelta(days=5))
    assert spare.status == CertificateStatus.STAGED

    def warned(day: float) -> set[str]:
        return {n.object_id for n in certs.check_certificate_expiry(now=now + timedelta(days=day))}

    assert warned(0) == {str(active.id), str(spare.id)}  # 5 days left: both, daily
    assert warned(1) == {str(active.id), str(spare.id)}
    assert warned(6) == {str(active.id)}  # expired: only the one in use, a day later
    assert warned(7) == {str(active.id)}
    assert warned(8) == {str(active.id), str(spare.id)}  # a week after the spare's last


def test_dipsims_ca_signs_a_busbar_csr_and_busbar_accepts_the_result(acme, tmp_path):
    """The demo's way to complete a CSR: `python -m dipsim ca sign`, as the DIP's CA would."""
    requested = certs.generate_key_and_csr(
        connection=acme,
        purpose="signing",
        common_name="signing.acme.example",
        organization="Acme",
        key_size=2048,
        actor="alice",
    )
    csr_path = tmp_path / "acme.csr"
    csr_path.write_text(requested.csr_pem)
    dipsim = [sys.executable, "-m", "dipsim", "ca"]
    subprocess.run(
        [*dipsim, "init", "--dir", str(tmp_path / "ca")], check=True, capture_output=True
    )
    signed = subprocess.run(
        [*dipsim, "sign", "--dir", str(tmp_path / "ca"), "--csr", str(csr_path),
         "--kind", "signing", "--dip-id", "1000000001", "--out", str(tmp_path / "acme.crt")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    certificate = x509.load_pem_x509_certificate((tmp_path / "acme.crt").read_bytes())
    assert signed.stdout.strip() == str(tmp_path / "acme.crt")
    assert (
        certificate.public_key() == x509.load_pem_x509_csr(requested.csr_pem.encode()).public_key()
    )
    assert "urn:dip:id:1000000001" in certificate.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    done = certs.import_signed_certificate(
        certificate=requested, pem=(tmp_path / "acme.crt").read_bytes(), actor="alice"
    )
    assert done.status == CertificateStatus.STAGED

    # A file that is not a request is named, and nothing is written.
    (tmp_path / "junk.csr").write_text("-----BEGIN CERTIFICATE REQUEST-----\nnope\n")
    refused = subprocess.run(
        [*dipsim, "sign", "--dir", str(tmp_path / "ca"), "--csr", str(tmp_path / "junk.csr"),
         "--kind", "mtls", "--dip-id", "1000000001", "--out", str(tmp_path / "junk.crt")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "not a PEM certificate signing request" in refused.stderr
    assert not (tmp_path / "junk.crt").exists()
