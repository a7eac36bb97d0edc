"""The DIP's application-layer message signature, both ways (DIP.md section 3).

Four headers travel with every request:

- ``X-DIP-Signature-Date``: UTC ISO-8601 with milliseconds, e.g. ``2025-06-27T14:29:09.061Z``;
- ``X-DIP-Content-Hash``: base64 of the SHA-256 of the exact body bytes;
- ``X-DIP-Signature``: base64 RSASSA-PKCS1-v1_5 SHA-256 over
  ``METHOD;lower(full URL);date;hash`` (UTF-8);
- ``X-DIP-Signature-Certificate``: base64 of the signing certificate's PEM text.

This module is dipsim's own implementation. It deliberately shares nothing with Busbar's, so a bug
on either side shows up as a failed signature rather than cancelling out.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from dipsim.pki import cert_dip_ids

H_SIGNATURE = "X-DIP-Signature"
H_DATE = "X-DIP-Signature-Date"
H_HASH = "X-DIP-Content-Hash"
H_CERT = "X-DIP-Signature-Certificate"
H_MPO = "X-DIP-MPO"
SIGNATURE_HEADERS = (H_SIGNATURE, H_DATE, H_HASH, H_CERT)


class SignatureError(Exception):
    """A request's signature headers do not verify; ``str(err)`` says why."""


def content_hash(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def signature_date(now: dt.datetime | None = None) -> str:
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def signing_string(method: str, url: str, date: str, body_hash: str) -> bytes:
    """Return the bytes that are signed: ``METHOD;lower(url);date;hash``."""
    return f"{method.upper()};{url.lower()};{date};{body_hash}".encode()


def sign(key: rsa.RSAPrivateKey, data: bytes) -> str:
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def encode_certificate(cert_pem: bytes) -> str:
    """Return the header form of a certificate: base64 of its PEM text with LF newlines."""
    return base64.b64encode(cert_pem.replace(b"\r\n", b"\n")).decode("ascii")


@dataclass(frozen=True)
class Signer:
    """A signing key with its certificate, ready to produce the four headers."""

    key: rsa.RSAPrivateKey
    cert_pem: bytes

    @classmethod
    def from_files(cls, cert_path: str, key_path: str) -> Signer:
        key = serialization.load_pem_private_key(open(key_path, "rb").read(), password=None)  # noqa: SIM115
        if not isinstance(key, rsa.RSAPrivateKey):
            raise TypeError("signing key must be RSA")
        return cls(key=key, cert_pem=open(cert_path, "rb").read())

    def headers(
        self, method: str, url: str, body: bytes, now: dt.datetime | None = None
    ) -> dict[str, str]:
        date = signature_date(now)
        body_hash = content_hash(body)
        return {
            H_DATE: date,
            H_HASH: body_hash,
            H_SIGNATURE: sign(self.key, signing_string(method, url, date, body_hash)),
            H_CERT: encode_certificate(self.cert_pem),
        }


# Extended key usages that make a certificate a TLS one (client or server authentication).
TLS_USAGES = frozenset({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH})


def check_signing_profile(cert: x509.Certificate) -> None:
    """Refuse a certificate whose profile is not a message-signing one, as the DIP does.

    Signing and mTLS certificates are issued separately: a signing certificate's key usage allows
    digital signatures (a critical KeyUsage is required), and it carries no extended key usage
    that limits it to TLS. An mTLS certificate, whose extended key usage is client and/or server
    authentication and nothing else, cannot sign messages.
    """
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise SignatureError("signature certificate has no key usage") from None
    if not usage.digital_signature:
        raise SignatureError("signature certificate's key usage does not allow digital signatures")
    try:
        extended = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return
    if extended and extended <= TLS_USAGES:
        raise SignatureError(
            "signature certificate is a TLS (mTLS) certificate, not a signing certificate"
        )


def parse_signature_date(value: str) -> dt.datetime:
    """Parse an ``X-DIP-Signature-Date``; accepts ``Z`` or an explicit offset, with or without millis."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = dt.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError("signature date has no time zone")
    return parsed


@dataclass(frozen=True)
class VerifiedSignature:
    """What a good signature proves: the certificate and the DIP IDs it may act for."""

    certificate: x509.Certificate
    dip_ids: frozenset[str]


class SignatureVerifier:
    """Verify the four signature headers against trusted CA certificates.

    Certificates are parsed and chain-checked once per distinct header value (an LRU cache), so
    a busy sender that reuses one certificate costs one RSA verification per request.
    """

    def __init__(
        self,
        ca_certs: Iterable[x509.Certificate],
        skew_seconds: float = 300.0,
        cache_size: int = 256,
    ) -> None:
        self.ca_certs = list(ca_certs)
        self.skew = dt.timedelta(seconds=skew_seconds)
        self._cache: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def _certificate(self, header_value: str) -> x509.Certificate:
        with self._lock:
            cert = self._cache.get(header_value)
            if cert is not None:
                self._cache.move_to_end(header_value)
                return cert
        try:
            pem = base64.b64decode(header_value, validate=True)
            cert = x509.load_pem_x509_certificate(pem)
        except (binascii.Error, ValueError) as err:
            raise SignatureError("signature certificate is not base64 PEM") from err
        for ca in self.ca_certs:
            try:
                cert.verify_directly_issued_by(ca)
            except (ValueError, TypeError, InvalidSignature):
                continue
            break
        else:
            raise SignatureError("signature certificate is not issued by a trusted CA")
        check_signing_profile(cert)
        with self._lock:
            self._cache[header_value] = cert
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return cert

    def verify(
        self,
        headers: Mapping[str, str],
        method: str,
        url: str,
        body: bytes,
        now: dt.datetime | None = None,
    ) -> VerifiedSignature:
        """Check hash, date, certificate and signature; raise :class:`SignatureError` if any fails.

        ``headers`` must be case-insensitive for lookups (aiohttp's and httpx's are).
        """
        missing = [name for name in SIGNATURE_HEADERS if not headers.get(name)]
        if missing:
            raise SignatureError(f"missing header(s): {', '.join(missing)}")
        body_hash = headers[H_HASH].strip()
        if not hmac.compare_digest(body_hash, content_hash(body)):
            raise SignatureError("content hash does not match the body")
        try:
            signed_at = parse_signature_date(headers[H_DATE])
        except ValueError as err:
            raise SignatureError("signature date is not an ISO-8601 UTC timestamp") from err
        now = now or dt.datetime.now(dt.UTC)
        if abs(now - signed_at) > self.skew:
            raise SignatureError("signature date is outside the allowed clock skew")
        cert = self._certificate(headers[H_CERT].strip())
        if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
            raise SignatureError("signature certificate is expired or not yet valid")
        try:
            signature = base64.b64decode(headers[H_SIGNATURE].strip(), validate=True)
        except binascii.Error as err:
            raise SignatureError("signature is not base64") from err
        public_key = cert.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SignatureError("signature certificate does not hold an RSA key")
        try:
            public_key.verify(
                signature,
                signing_string(method, url, headers[H_DATE].strip(), body_hash),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature as err:
            raise SignatureError("signature does not verify") from err
        return VerifiedSignature(certificate=cert, dip_ids=cert_dip_ids(cert))
