"""The DIP's application-layer request signature (DIP.md section 3), both ways.

Every request to the DIP, and every webhook call from it, carries four headers:

- ``X-DIP-Signature-Date``: UTC ISO-8601 with milliseconds and ``Z`` (``2025-06-27T14:29:09.061Z``);
- ``X-DIP-Content-Hash``: base64 of the SHA-256 of the exact body bytes;
- ``X-DIP-Signature``: base64 RSASSA-PKCS1-v1_5 SHA-256 over the UTF-8 string
  ``METHOD;lower(full URL);date;hash``;
- ``X-DIP-Signature-Certificate``: base64 of the signing certificate's PEM text (LF newlines).

Pure functions: no Django, no I/O. The verifier names exactly what failed, because a rejected DIP
delivery has to be evidenced (which check, on which bytes), not just refused.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HEADER_DATE = "X-DIP-Signature-Date"
HEADER_CONTENT_HASH = "X-DIP-Content-Hash"
HEADER_SIGNATURE = "X-DIP-Signature"
HEADER_CERTIFICATE = "X-DIP-Signature-Certificate"
SIGNATURE_HEADERS = (HEADER_DATE, HEADER_CONTENT_HASH, HEADER_SIGNATURE, HEADER_CERTIFICATE)

# The status code a recipient reports for a signature that does not verify (ResponseCodes).
SIGNATURE_INVALID_CODE = "RCP9999"

# A leaf plus intermediates; real chains (GlobalSign) are two or three deep.
_MAX_CHAIN = 5
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$")


class SignatureError(Exception):
    """A request's signature headers do not verify.

    ``reason`` says exactly which check failed (for the security event and the evidence),
    ``kind`` is a stable slug for code and tests (``missing_header``, ``malformed_date``,
    ``date_skew``, ``hash_mismatch``, ``malformed_certificate``, ``untrusted_certificate``,
    ``certificate_expired``, ``certificate_not_yet_valid``, ``malformed_signature``,
    ``bad_signature``), and ``code`` is the status code to report back (``RCP9999``).
    """

    def __init__(self, reason: str, code: str = SIGNATURE_INVALID_CODE, *, kind: str = "invalid"):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.kind = kind


@dataclass(frozen=True)
class VerifiedSignature:
    """What a good signature proves: which certificate signed, and when it says it signed."""

    fingerprint_sha256: str
    subject: str
    serial: int
    not_after: dt.datetime
    signed_at: dt.datetime
    certificate: x509.Certificate
    # The SHA-256 of the body the content hash was checked against, so whoever stores the body
    # does not hash it again.
    body_sha256: bytes


def _utcnow(now: dt.datetime | None) -> dt.datetime:
    if now is None:
        return dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(dt.UTC)


def content_hash(body: bytes) -> str:
    """Return the ``X-DIP-Content-Hash`` of ``body``: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def signature_date(now: dt.datetime | None = None) -> str:
    """Return ``now`` (default: the current time) as ``YYYY-MM-DDThh:mm:ss.mmmZ`` in UTC."""
    moment = _utcnow(now)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def signing_string(*, method: str, url: str, date: str, body_hash: str) -> bytes:
    """Return the exact bytes that are signed: UTF-8 of ``METHOD;lower(url);date;hash``."""
    return f"{method.upper()};{url.lower()};{date};{body_hash}".encode()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER encoding, lower-case hex (how Busbar names a certificate)."""
    return certificate.fingerprint(hashes.SHA256()).hex()


def encode_certificate_header(certificate_pem: bytes) -> str:
    """Return the ``X-DIP-Signature-Certificate`` value: base64 of the PEM text with LF newlines."""
    return base64.b64encode(certificate_pem.replace(b"\r\n", b"\n")).decode("ascii")


def sign_request(
    *,
    method: str,
    url: str,
    body: bytes,
    private_key: rsa.RSAPrivateKey,
    certificate_pem: bytes,
    now: dt.datetime | None = None,
) -> dict[str, str]:
    """Return the four ``X-DIP-*`` headers for a request.

    ``url`` must be the full URL exactly as it goes on the wire (scheme, host, port, path, query);
    ``body`` the exact bytes sent. ``private_key`` is the RSA key of ``certificate_pem``.
    """
    date = signature_date(now)
    body_hash = content_hash(body)
    signature = private_key.sign(
        signing_string(method=method, url=url, date=date, body_hash=body_hash),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )
    return {
        HEADER_DATE: date,
        HEADER_CONTENT_HASH: body_hash,
        HEADER_SIGNATURE: base64.b64encode(signature).decode("ascii"),
        HEADER_CERTIFICATE: encode_certificate_header(certificate_pem),
    }


def load_private_key(pem: bytes, password: bytes | None = None) -> rsa.RSAPrivateKey:
    """Load an RSA private key from PEM bytes; raise ``ValueError`` if it is not an RSA key."""
    key = serialization.load_pem_private_key(pem, password=password)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the DIP signs with RSA: the private key is not an RSA key")
    return key


def parse_signature_date(value: str) -> dt.datetime:
    """Parse an ``X-DIP-Signature-Date``; raise :class:`SignatureError` (``malformed_date``).

    Accepts ``Z`` or an explicit offset, with or without fractional seconds: the DIP's own format
    is fixed, but refusing a well-formed ISO-8601 instant would only add false rejections.
    """
    text = value.strip()
    if not _DATE_RE.match(text):
        raise SignatureError(
            f"{HEADER_DATE} {value!r} is not an ISO-8601 UTC timestamp", kind="malformed_date"
        )
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)
    except ValueError as err:
        raise SignatureError(
            f"{HEADER_DATE} {value!r} is not a valid date", kind="malformed_date"
        ) from err


@lru_cache(maxsize=256)
def _decode_certificates(header_value: str) -> tuple[x509.Certificate, ...]:
    # Parsing is the costly part of a busy webhook's check and senders reuse one certificate
    # for months, so the parse is cached by header value; trust and dates are checked every time.
    try:
        pem = base64.b64decode(header_value, validate=True)
        certificates = x509.load_pem_x509_certificates(pem)
    except (binascii.Error, ValueError) as err:
        raise SignatureError(
            f"{HEADER_CERTIFICATE} is not base64 of a PEM certificate",
            kind="malformed_certificate",
        ) from err
    return tuple(certificates)


def _issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(certificate: x509.Certificate) -> bool:
    try:
        return bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _chain_to_anchor(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    trust_anchors: Sequence[x509.Certificate],
) -> list[x509.Certificate]:
    """Return the path leaf -> ... -> anchor, or raise ``untrusted_certificate``."""
    anchor_fingerprints = {certificate_fingerprint(a) for a in trust_anchors}
    path = [leaf]
    current = leaf
    for _ in range(_MAX_CHAIN):
        if certificate_fingerprint(current) in anchor_fingerprints:
            return path  # pinned: the anchor itself signed
        for anchor in trust_anchors:
            if _issued_by(current, anchor):
                return [*path, anchor]
        step = next(
            (c for c in intermediates if c not in path and _is_ca(c) and _issued_by(current, c)),
            None,
        )
        if step is None:
            break
        path.append(step)
        current = step
    raise SignatureError(
        f"signing certificate {leaf.subject.rfc4514_string()} does not chain to a trust anchor",
        kind="untrusted_certificate",
    )


@dataclass(frozen=True)
class _TrustedPath:
    path: tuple[x509.Certificate, ...]  # leaf first, then up to the anchor
    fingerprint: str  # the leaf's
    subject: str  # the leaf's


@lru_cache(maxsize=256)
def _trusted_path(header_value: str, trust_anchors: tuple[x509.Certificate, ...]) -> _TrustedPath:
    """The signing certificate's path to one of ``trust_anchors``, by header value and anchors.

    A sender signs with one certificate for months, and checking its chain (signatures over
    the certificates, fingerprints) was half of a single-message push's verification; the path
    depends only on the certificates and the anchors, so it is cached by both. Validity dates
    are checked against the request's time on every call, and a chain that does not verify is
    never cached (it raises)."""
    certificates = _decode_certificates(header_value)
    if not certificates:
        raise SignatureError(
            f"{HEADER_CERTIFICATE} holds no certificate", kind="malformed_certificate"
        )
    leaf = certificates[0]
    path = _chain_to_anchor(leaf, certificates[1:], trust_anchors)
    return _TrustedPath(
        path=tuple(path),
        fingerprint=certificate_fingerprint(leaf),
        subject=leaf.subject.rfc4514_string(),
    )


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # Plain dicts are case-sensitive; HTTP header names are not. The ingest server's headers
    # come lowercased (ASGI), so that spelling is tried before a scan of every name.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = headers.get(lowered)
        if value is None:
            value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value.strip() if isinstance(value, str) else None


def verify_request(
    *,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    trust_anchors: Sequence[x509.Certificate],
    max_skew: dt.timedelta,
    now: dt.datetime | None = None,
) -> VerifiedSignature:
    """Verify the four ``X-DIP-*`` headers of a request; return who signed it.

    ``url`` is the full URL the sender addressed (for a webhook: the callback URL as registered
    with the DIP, not the one a proxy in front of Busbar rewrote it to). Checks, in order: all headers present; the date is well formed and within ``max_skew`` of
    ``now``; the content hash matches ``body``; the certificate parses, chains (through any
    intermediates sent with it) to one of ``trust_anchors`` and every certificate on the path is
    within its validity dates; the RSA signature verifies over ``METHOD;lower(url);date;hash``.
    Raises :class:`SignatureError` naming the first check that failed.
    """
    moment = _utcnow(now)
    values: dict[str, str] = {}
    for name in SIGNATURE_HEADERS:
        value = _header(headers, name)
        if value:
            values[name] = value
    missing = [name for name in SIGNATURE_HEADERS if name not in values]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}", kind="missing_header")
    date, body_hash = values[HEADER_DATE], values[HEADER_CONTENT_HASH]
    signature_b64, certificate_b64 = values[HEADER_SIGNATURE], values[HEADER_CERTIFICATE]

    signed_at = parse_signature_date(date)
    if abs(moment - signed_at) > max_skew:
        raise SignatureError(
            f"{HEADER_DATE} {date} is more than {max_skew.total_seconds():g}s from now "
            f"({signature_date(moment)})",
            kind="date_skew",
        )
    body_sha256 = hashlib.sha256(body).digest()
    if not hmac.compare_digest(body_hash.encode(), base64.b64encode(body_sha256)):
        raise SignatureError(
            f"{HEADER_CONTENT_HASH} does not match the SHA-256 of the body", kind="hash_mismatch"
        )

    trusted = _trusted_path(certificate_b64, tuple(trust_anchors))
    for certificate in trusted.path:
        if moment > certificate.not_valid_after_utc:
            raise SignatureError(
                f"certificate {certificate.subject.rfc4514_string()} expired at "
                f"{certificate.not_valid_after_utc.isoformat()}",
                kind="certificate_expired",
            )
        if moment < certificate.not_valid_before_utc:
            raise SignatureError(
                f"certificate {certificate.subject.rfc4514_string()} is not valid before "
                f"{certificate.not_valid_before_utc.isoformat()}",
                kind="certificate_not_yet_valid",
            )
    leaf = trusted.path[0]

    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except binascii.Error as err:
        raise SignatureError(
            f"{HEADER_SIGNATURE} is not base64", kind="malformed_signature"
        ) from err
    public_key = leaf.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise SignatureError("the signing certificate holds no RSA key", kind="bad_signature")
    try:
        public_key.verify(
            signature,
            signing_string(method=method, url=url, date=date, body_hash=body_hash),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
    except InvalidSignature as err:
        raise SignatureError(
            f"{HEADER_SIGNATURE} does not verify over {method.upper()};{url.lower()};{date};<hash>",
            kind="bad_signature",
        ) from err
    return VerifiedSignature(
        fingerprint_sha256=trusted.fingerprint,
        subject=trusted.subject,
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc,
        signed_at=signed_at,
        certificate=leaf,
        body_sha256=body_sha256,
    )
