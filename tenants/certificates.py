"""Certificates and keys of a connection's credential set: obtain, check, stage, rotate, revoke.

Private keys are envelope-encrypted (core.crypto) bound to the certificate's row, decrypted only by
``load_key_material`` for the worker that signs or connects, and never returned to a browser or
written to a log. Every action is audited. Services take ``now`` so tests control the clock.

The lifecycle (``CertificateStatus``): a generated key and CSR wait as *requested*; a signed
certificate imported for it, or a whole PEM/PKCS#12 bundle, is *staged*; ``rotate_certificate``
runs a canary with the staged one and, only if it passes, cuts over atomically: the new one is
*active* and the old one *retiring* until the overlap window ends (it still verifies and finishes
in-flight retries), then *retired*. *Revoked* stops all use at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from core import crypto
from core.audit import record_event
from tenants import notices
from tenants.models import (
    Certificate,
    CertificatePurpose,
    CertificateStatus,
    Connection,
    Notification,
    Role,
)

logger = logging.getLogger(__name__)

MIN_RSA_BITS = 2048
# Beyond this a key only slows every signature and handshake; nobody issues such certificates.
MAX_RSA_BITS = 8192
GENERATED_RSA_BITS = (2048, 3072, 4096)
# The curves an mTLS certificate or a trust anchor may use. DIP message signatures are
# RSASSA-PKCS1-v1_5 (DIP.md), so a signing certificate must hold an RSA key.
ALLOWED_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384"}
# X.520 upper bounds, which CAs enforce; longer values make a CSR that cannot be built.
MAX_NAME_ATTRIBUTE = 64
DEFAULT_OVERLAP = timedelta(hours=72)  # the DIP outage requirement: retries may run this long
KEY_PURPOSES = (CertificatePurpose.SIGNING, CertificatePurpose.MTLS)


class CertificateError(ValidationError):
    """A certificate, key or bundle was refused; the message names the problem."""


# --- reading certificates ----------------------------------------------------------------------


@dataclass(frozen=True)
class CertificateFacts:
    subject: str
    issuer: str
    serial: str
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime
    key_type: str
    key_size: int | None


def describe_key(public_key: object) -> tuple[str, int | None]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RSA", public_key.key_size
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"EC {public_key.curve.name}", public_key.curve.key_size
    return type(public_key).__name__, None


def check_key_profile(public_key: object, *, purpose: str) -> None:
    """The one key profile, for imported and generated keys alike: RSA of 2048 to 8192 bits for
    every purpose, or EC on P-256 or P-384 except for signing (the DIP signs with RSA only).
    Raises CertificateError naming the key and what is accepted instead."""
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise CertificateError(
                f"the RSA key has {public_key.key_size} bits; at least {MIN_RSA_BITS} are needed"
            )
        if public_key.key_size > MAX_RSA_BITS:
            raise CertificateError(
                f"the RSA key has {public_key.key_size} bits; at most {MAX_RSA_BITS} are accepted"
            )
        return
    accepted = "RSA (2048 bits or more)"
    if purpose != CertificatePurpose.SIGNING:
        accepted += " or EC on P-256 or P-384"
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if purpose == CertificatePurpose.SIGNING:
            raise CertificateError(
                "a signing certificate needs an RSA key: DIP signatures are RSA (PKCS#1 v1.5)"
            )
        if public_key.curve.name not in ALLOWED_CURVES:
            raise CertificateError(
                f"the EC key is on curve {public_key.curve.name}, which the DIP does not use; "
                f"use {accepted}"
            )
        return
    kind = type(public_key).__name__.removeprefix("_").replace("PublicKey", "")
    raise CertificateError(f"the key is {kind}, which the DIP does not use; use {accepted}")


def _column_limit(field: str) -> int:
    return getattr(Certificate._meta.get_field(field), "max_length", None) or 0


def certificate_facts(cert: x509.Certificate) -> CertificateFacts:
    """What the inventory records about ``cert``; raises CertificateError for a certificate
    that cannot be read or whose names do not fit the inventory."""
    try:
        key_type, key_size = describe_key(cert.public_key())
        facts = CertificateFacts(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            serial=format(cert.serial_number, "x"),
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            key_type=key_type,
            key_size=key_size,
        )
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"the certificate cannot be read: {exc}") from exc
    for field in ("subject", "issuer", "serial", "key_type"):
        value, limit = getattr(facts, field), _column_limit(field)
        if len(value) > limit:
            raise CertificateError(
                f"the certificate's {field.replace('_', ' ')} is {len(value)} characters long; "
                f"at most {limit} are accepted"
            )
    return facts


def certificate_extensions(cert: x509.Certificate) -> x509.Extensions:
    """The certificate's extensions, or CertificateError naming why they cannot be read (one
    given twice, or one whose content is malformed)."""
    try:
        return cert.extensions
    except x509.DuplicateExtension as exc:
        name = getattr(exc.oid, "_name", None) or exc.oid.dotted_string
        raise CertificateError(f"the certificate has the {name} extension more than once") from exc
    except ValueError as exc:
        raise CertificateError(f"the certificate has a malformed extension: {exc}") from exc


def parse_pem_certificates(data: bytes) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError(
            "the file is not a PEM certificate (expected -----BEGIN CERTIFICATE-----)"
        ) from exc
    return certs


def _public_bytes(public_key: object) -> bytes:
    return public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_certificate(
    cert: x509.Certificate,
    *,
    purpose: str,
    private_key: object | None,
    now: datetime,
) -> None:
    """Refuse a certificate that cannot serve ``purpose`` now, naming the first problem found."""
    certificate_facts(cert)  # readable, and its names fit the inventory
    extensions = certificate_extensions(cert)
    try:
        public_key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"the certificate's key cannot be read: {exc}") from exc
    if cert.not_valid_after_utc <= now:
        raise CertificateError(
            f"the certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if cert.not_valid_before_utc > now:
        raise CertificateError(
            f"the certificate is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    check_key_profile(public_key, purpose=purpose)
    if purpose == CertificatePurpose.TRUST_ANCHOR:
        return
    if private_key is not None and _public_bytes(private_key.public_key()) != _public_bytes(  # type: ignore[attr-defined]
        public_key
    ):
        raise CertificateError("the certificate does not match its private key")
    try:
        usage = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.digital_signature:
        raise CertificateError("the certificate's key usage does not allow digital signatures")
    if purpose == CertificatePurpose.MTLS:
        try:
            eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            eku = None
        if eku is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise CertificateError(
                "the certificate's extended key usage lacks TLS client authentication (clientAuth)"
            )


# --- keys at rest ------------------------------------------------------------------------------


def key_context(certificate: Certificate) -> str:
    """Associated data binding an encrypted key to its tenant and certificate row."""
    return f"tenant:{certificate.tenant_id}:certificate:{certificate.id}:private_key"


def _encrypt_key(certificate: Certificate, private_key: object) -> None:
    der = private_key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    certificate.private_key_encrypted = crypto.encrypt(der, context=key_context(certificate))


@dataclass(frozen=True)
class KeyMaterial:
    """What a worker needs to sign or connect: in memory only, never persisted or logged."""

    certificate_id: UUID
    fingerprint_sha256: str
    certificate_pem: bytes
    chain_pem: bytes
    private_key: object

    def __repr__(self) -> str:  # keep the key out of tracebacks and logs
        return f"KeyMaterial(certificate_id={self.certificate_id}, fingerprint={self.fingerprint_sha256[:16]}…)"


def load_key_material(*, certificate: Certificate) -> KeyMaterial:
    """Decrypt a certificate's key for the worker that uses it. Refuses revoked and retired ones."""
    if certificate.status in (CertificateStatus.REVOKED, CertificateStatus.RETIRED):
        raise CertificateError(
            f"certificate {certificate.fingerprint_sha256[:16]} is {certificate.status}"
        )
    if not certificate.private_key_encrypted or not certificate.certificate_pem:
        raise CertificateError("this certificate has no key and certificate pair to use")
    der = crypto.decrypt(certificate.private_key_encrypted, context=key_context(certificate))
    return KeyMaterial(
        certificate_id=certificate.id,
        fingerprint_sha256=certificate.fingerprint_sha256,
        certificate_pem=certificate.certificate_pem.encode(),
        chain_pem=certificate.chain_pem.encode(),
        private_key=serialization.load_der_private_key(der, password=None),
    )


# --- obtaining certificates --------------------------------------------------------------------


def _apply_facts(certificate: Certificate, cert: x509.Certificate) -> None:
    facts = certificate_facts(cert)
    for field, value in facts.__dict__.items():
        setattr(certificate, field, value)
    certificate.certificate_pem = cert.public_bytes(serialization.Encoding.PEM).decode()


def _audit(action: str, certificate: Certificate, *, actor: str, **detail: object) -> None:
    record_event(
        action=f"certificate.{action}",
        actor=actor,
        object_type="certificate",
        object_id=certificate.id,
        detail={
            "purpose": certificate.purpose,
            "status": certificate.status,
            "fingerprint_sha256": certificate.fingerprint_sha256,
            "subject": certificate.subject,
            "connection_id": certificate.connection_id,
            **detail,
        },
    )


def _refuse_duplicate(connection: Connection, purpose: str, fingerprint: str) -> None:
    if Certificate.objects.filter(
        connection=connection, purpose=purpose, fingerprint_sha256=fingerprint
    ).exists():
        raise CertificateError("this certificate is already in the connection's inventory")


@transaction.atomic
def generate_key_and_csr(
    *,
    connection: Connection,
    purpose: str,
    common_name: str,
    organization: str,
    country: str = "GB",
    organizational_unit: str = "",
    key_size: int = 3072,
    actor: str,
    owner: User | None = None,
) -> Certificate:
    """Make a new RSA key (encrypted at once) and a CSR for the given subject.

    Profile checks run before the CSR leaves: RSA of 2048, 3072 or 4096 bits (check_key_profile),
    a common name that is a DNS name, an organisation, a two-letter country code, and no name
    attribute longer than a certificate allows (64 characters).
    """
    if purpose not in KEY_PURPOSES:
        raise CertificateError(f"a CSR is for signing or mTLS certificates, not {purpose!r}")
    if key_size < MIN_RSA_BITS:
        raise CertificateError(f"RSA keys must have at least {MIN_RSA_BITS} bits, not {key_size}")
    if key_size not in GENERATED_RSA_BITS:
        raise CertificateError(
            f"a generated RSA key has {', '.join(map(str, GENERATED_RSA_BITS))} bits, not {key_size}"
        )
    problems = []
    organization, organizational_unit = organization.strip(), organizational_unit.strip()
    for label, value in (
        ("common name", common_name),
        ("organisation", organization),
        ("organisational unit", organizational_unit),
    ):
        if len(value) > MAX_NAME_ATTRIBUTE:
            problems.append(
                f"the {label} is {len(value)} characters long; a certificate allows at most "
                f"{MAX_NAME_ATTRIBUTE}"
            )
    labels = common_name.split(".")
    if (
        not common_name
        or len(common_name) > 253
        or not all(
            label and len(label) <= 63 and label.replace("-", "").isalnum() and label.isascii()
            for label in labels
        )
    ):
        problems.append(f"common name {common_name!r} is not a DNS name (e.g. dip.acme.example)")
    if not organization:
        problems.append("organisation is required")
    if len(country) != 2 or not country.isascii() or not country.isalpha() or not country.isupper():
        problems.append(f"country {country!r} must be a two-letter code such as GB")
    if problems:
        raise CertificateError(problems)
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    check_key_profile(key.public_key(), purpose=purpose)
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, country),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
    ]
    if organizational_unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, organizational_unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attributes))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    certificate = Certificate(
        connection=connection,
        purpose=purpose,
        status=CertificateStatus.REQUESTED,
        owner=owner,
        subject=csr.subject.rfc4514_string(),
        key_type="RSA",
        key_size=key_size,
        csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(),
    )
    _encrypt_key(certificate, key)
    certificate.save()
    _audit("csr_generated", certificate, actor=actor)
    return certificate


@transaction.atomic
def import_signed_certificate(
    *, certificate: Certificate, pem: bytes, actor: str, now: datetime | None = None
) -> Certificate:
    """Attach the CA's signed certificate to a requested key; the pair is then staged."""
    now = now or timezone.now()
    if certificate.status != CertificateStatus.REQUESTED:
        raise CertificateError(
            f"this certificate is {certificate.status}, not awaiting a signed certificate"
        )
    certs = parse_pem_certificates(pem)
    leaf = certs[0]
    material_key = serialization.load_der_private_key(
        crypto.decrypt(certificate.private_key_encrypted, context=key_context(certificate)),
        password=None,
    )
    check_certificate(leaf, purpose=certificate.purpose, private_key=material_key, now=now)
    _refuse_duplicate(
        certificate.connection, certificate.purpose, leaf.fingerprint(hashes.SHA256()).hex()
    )
    _apply_facts(certificate, leaf)
    certificate.chain_pem = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]
    ).decode()
    certificate.status = CertificateStatus.STAGED
    certificate.save()
    _audit("signed_certificate_imported", certificate, actor=actor)
    return certificate


PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----.+?-----END \1-----", re.DOTALL
)


def _load_bundle(data: bytes, password: str | None) -> tuple[object | None, list[x509.Certificate]]:
    """A PKCS#12 file, or PEM text holding a certificate (and its key)."""
    if data.lstrip().startswith(b"-----BEGIN"):
        certs = parse_pem_certificates(data)
        key = None
        block = PEM_PRIVATE_KEY.search(data)
        if block:
            try:
                key = serialization.load_pem_private_key(
                    block.group(0), password=password.encode() if password else None
                )
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                raise CertificateError(f"the private key could not be read: {exc}") from exc
        return key, certs
    try:
        key, cert, extra = pkcs12.load_key_and_certificates(
            data, password.encode() if password else None
        )
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(
            "the PKCS#12 bundle could not be opened: wrong password, or not a PKCS#12 file"
        ) from exc
    if cert is None:
        raise CertificateError("the PKCS#12 bundle holds no certificate")
    return key, [cert, *extra]


@transaction.atomic
def import_certificate(
    *,
    connection: Connection,
    purpose: str,
    data: bytes,
    password: str | None = None,
    label: str = "",
    actor: str,
    owner: User | None = None,
    now: datetime | None = None,
) -> Certificate:
    """Import a PEM or PKCS#12 bundle. Signing and mTLS certificates need their key (staged);
    trust anchors come without one and are active at once (several may be active together)."""
    now = now or timezone.now()
    key, certs = _load_bundle(data, password)
    leaf = certs[0]
    if purpose in KEY_PURPOSES and key is None:
        raise CertificateError("a signing or mTLS certificate must come with its private key")
    if purpose == CertificatePurpose.TRUST_ANCHOR and key is not None:
        raise CertificateError(
            "a trust anchor is the DIP's certificate: import it without a private key"
        )
    if key is not None:
        check_key_profile(key.public_key(), purpose=purpose)  # type: ignore[attr-defined]
    check_certificate(leaf, purpose=purpose, private_key=key, now=now)
    _refuse_duplicate(connection, purpose, leaf.fingerprint(hashes.SHA256()).hex())
    certificate = Certificate(connection=connection, purpose=purpose, label=label, owner=owner)
    _apply_facts(certificate, leaf)
    certificate.chain_pem = b"".join(
        c.public_bytes(serialization.Encoding.PEM) for c in certs[1:]
    ).decode()
    if purpose == CertificatePurpose.TRUST_ANCHOR:
        certificate.status = CertificateStatus.ACTIVE
        certificate.activated_at = now
    else:
        certificate.status = CertificateStatus.STAGED
        _encrypt_key(certificate, key)
    certificate.save()
    _audit("imported", certificate, actor=actor)
    return certificate


# --- rotation, revocation ----------------------------------------------------------------------


@dataclass(frozen=True)
class CanaryResult:
    ok: bool
    detail: str


Canary = Callable[[Certificate], CanaryResult]


def active_certificate(*, connection: Connection, purpose: str) -> Certificate | None:
    return (
        Certificate.objects.filter(
            connection=connection, purpose=purpose, status=CertificateStatus.ACTIVE
        )
        .order_by("-activated_at")
        .first()
    )


def rotate_certificate(
    *,
    certificate: Certificate,
    canary: Canary,
    actor: str,
    overlap: timedelta = DEFAULT_OVERLAP,
    now: datetime | None = None,
) -> Certificate:
    """Canary the staged certificate, then cut over in one transaction.

    The canary (a signed, mutually authenticated request to the DIP with the staged credentials)
    runs before the cut-over's transaction opens, as it talks to the outside world. If it fails
    nothing changes, which is the rollback; the result is recorded on the certificate either way.
    Raises CertificateError on failure.
    """
    if certificate.status != CertificateStatus.STAGED:
        raise CertificateError(
            f"only a staged certificate can be rotated in; this one is {certificate.status}"
        )
    result = canary(certificate)
    now = now or timezone.now()
    if not result.ok:
        with transaction.atomic():
            failed = Certificate.objects.select_for_update().get(id=certificate.id)
            failed.last_canary_at, failed.last_canary_ok = now, False
            failed.last_canary_detail = result.detail[:500]
            failed.save(update_fields=["last_canary_at", "last_canary_ok", "last_canary_detail"])
            _audit("canary_failed", failed, actor=actor, canary=result.detail[:500])
        raise CertificateError(
            f"the canary failed, so the current certificate stays in use: {result.detail}"
        )
    with transaction.atomic():
        staged = Certificate.objects.select_for_update().get(id=certificate.id)
        staged.last_canary_at, staged.last_canary_ok = now, True
        staged.last_canary_detail = result.detail[:500]
        if staged.status != CertificateStatus.STAGED:
            raise CertificateError("the certificate changed state while its canary ran; try again")
        # Lock the current one too, so two rotations cannot both cut over.
        current = (
            Certificate.objects.select_for_update()
            .filter(
                connection_id=staged.connection_id,
                purpose=staged.purpose,
                status=CertificateStatus.ACTIVE,
            )
            .first()
        )
        if current is not None:
            current.status = CertificateStatus.RETIRING
            current.overlap_until = now + overlap
            current.save(update_fields=["status", "overlap_until"])
            _audit(
                "retiring", current, actor=actor, overlap_until=current.overlap_until.isoformat()
            )
        staged.status = CertificateStatus.ACTIVE
        staged.activated_at = now
        staged.save()
        _audit(
            "activated",
            staged,
            actor=actor,
            canary=result.detail[:500],
            replaces=str(current.id) if current else None,
        )
    return staged


@transaction.atomic
def activate_first_certificate(
    *, certificate: Certificate, actor: str, now: datetime | None = None
) -> Certificate:
    """Put a staged certificate into use where none is active yet (onboarding); no canary to
    compare against, so it is refused while another certificate of the purpose is active."""
    now = now or timezone.now()
    if active_certificate(connection=certificate.connection, purpose=certificate.purpose):
        raise CertificateError("a certificate is already active: rotate instead, with a canary")
    if certificate.status != CertificateStatus.STAGED:
        raise CertificateError(
            f"only a staged certificate can be activated; this one is {certificate.status}"
        )
    certificate.status = CertificateStatus.ACTIVE
    certificate.activated_at = now
    certificate.save(update_fields=["status", "activated_at"])
    _audit("activated", certificate, actor=actor)
    return certificate


@transaction.atomic
def retire_overlapped_certificates(*, now: datetime | None = None) -> int:
    """End the overlap of retiring certificates whose window has passed (current tenant)."""
    now = now or timezone.now()
    done = 0
    for certificate in Certificate.objects.select_for_update(skip_locked=True).filter(
        status=CertificateStatus.RETIRING, overlap_until__lte=now
    ):
        certificate.status = CertificateStatus.RETIRED
        certificate.retired_at = now
        certificate.save(update_fields=["status", "retired_at"])
        _audit("retired", certificate, actor="system")
        done += 1
    return done


@transaction.atomic
def revoke_certificate(
    *, certificate: Certificate, reason: str, actor: str, now: datetime | None = None
) -> Certificate:
    """Stop using a certificate at once, whatever its state. The key stays encrypted for evidence."""
    if not reason.strip():
        raise CertificateError("say why the certificate is revoked")
    if certificate.status == CertificateStatus.REVOKED:
        raise CertificateError("this certificate is already revoked")
    now = now or timezone.now()
    locked = Certificate.objects.select_for_update().get(id=certificate.id)
    previous = locked.status
    locked.status = CertificateStatus.REVOKED
    locked.revoked_at = now
    locked.revocation_reason = reason.strip()[:200]
    locked.save(update_fields=["status", "revoked_at", "revocation_reason"])
    _audit(
        "revoked", locked, actor=actor, reason=locked.revocation_reason, previous_status=previous
    )
    return locked


# --- expiry --------------------------------------------------------------------------------------

WARN_FROM = timedelta(days=60)
WATCHED = (CertificateStatus.ACTIVE, CertificateStatus.STAGED, CertificateStatus.RETIRING)


def warning_interval(*, days_left: float, in_use: bool) -> timedelta | None:
    """How often to warn at ``days_left`` (None: not yet). Closer to expiry means more often:
    fortnightly from 60 days, weekly from 14, daily in the last week; once expired, daily while
    the certificate is still in use and weekly otherwise."""
    if days_left > WARN_FROM.days:
        return None
    if days_left > 14:
        return timedelta(days=14)
    if days_left > 7:
        return timedelta(days=7)
    if days_left > 0 or in_use:
        return timedelta(days=1)
    return timedelta(days=7)


def warning_due(certificate: Certificate, *, now: datetime) -> bool:
    if certificate.not_after is None or certificate.status not in WATCHED:
        return False
    days_left = (certificate.not_after - now).total_seconds() / 86400
    interval = warning_interval(
        days_left=days_left, in_use=certificate.status == CertificateStatus.ACTIVE
    )
    if interval is None:
        return False
    last = certificate.last_expiry_warning_at
    # A little slack so a daily job that runs a few minutes early still warns on schedule.
    return last is None or now - last >= interval - timedelta(hours=1)


@transaction.atomic
def check_certificate_expiry(*, now: datetime | None = None) -> list[Notification]:
    """Warn the current tenant's certificate admins about certificates nearing or past expiry.

    Each warning is a notice (``tenants.notices``: console notification and an email to every
    certificate admin) and an audit event; ``last_expiry_warning_at`` makes the job idempotent
    within an interval, and the notice's condition keeps one open warning per certificate.
    """
    now = now or timezone.now()
    notifications: list[Notification] = []
    for certificate in (
        Certificate.objects.select_for_update(skip_locked=True)
        .select_related("connection__identity")
        .filter(status__in=WATCHED, not_after__lte=now + WARN_FROM)
    ):
        if certificate.not_after is None or not warning_due(certificate, now=now):
            continue
        days_left = (certificate.not_after - now).days
        where = f"{certificate.connection.identity} {certificate.connection.environment}"
        if certificate.not_after <= now:
            title = f"{certificate.get_purpose_display()} certificate for {where} has EXPIRED"
            level = "critical"
        else:
            title = f"{certificate.get_purpose_display()} certificate for {where} expires in {days_left} day{'s' if days_left != 1 else ''}"
            level = "critical" if days_left <= 7 else "warning"
        body = (
            f"Subject: {certificate.subject}\nFingerprint (SHA-256): {certificate.fingerprint_sha256}\n"
            f"Expires: {certificate.not_after:%Y-%m-%d %H:%M} UTC\nStatus: {certificate.get_status_display()}\n"
            "Stage a replacement and rotate it in from the Certificates page."
        )
        notifications.extend(
            notices.notify(
                condition=f"certificate_expiry:{certificate.id}",
                roles=[Role.CERTIFICATE_ADMIN],
                level=level,
                title=title,
                body=body,
                object_type="certificate",
                object_id=certificate.id,
                # The warning schedule (warning_due) decides when to repeat, not the notice.
                repeat_after=timedelta(0),
                now=now,
            )
        )
        certificate.last_expiry_warning_at = now
        certificate.save(update_fields=["last_expiry_warning_at"])
        _audit("expiry_warning", certificate, actor="system", days_left=days_left, level=level)
    return notifications
