"""dipsim's own test PKI: a CA, the DIP's certificates, and participant certificates.

The real DIP trusts GlobalSign-issued certificates and ties them to DIP IDs through onboarding. The
simulator stands in for both with one local CA, and writes the DIP IDs a certificate may act for
into the certificate itself as ``urn:dip:id:<DIP ID>`` URIs in the subjectAltName, so a verifier
needs nothing but the certificate and the CA to know who it belongs to.

Layout of a CA folder (``ca init --dir DIR``)::

    ca.crt / ca.key                    the test CA (trust anchor for mTLS and signatures)
    server.crt / server.key            dipsim's HTTPS server certificate (localhost, 127.0.0.1)
    dip-signing.crt / dip-signing.key  the DIP's message-signing certificate (webhook pushes)
    dip-mtls.crt / dip-mtls.key        the DIP's TLS client certificate (webhook pushes)
    dip-signing-expired.crt / .key     an expired signing certificate, for the expired-signature fault
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DIP_ID_URI_PREFIX = "urn:dip:id:"
DEFAULT_DIP_ID = "0000000000"
KEY_BITS = 2048


@dataclass(frozen=True)
class CaPaths:
    """Where the files of a CA folder live."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def pair(self, stem: str) -> tuple[Path, Path]:
        """Return ``(cert, key)`` paths for ``stem`` (``server``, ``dip-signing``, ``dip-mtls``)."""
        return self.root / f"{stem}.crt", self.root / f"{stem}.key"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)


def key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    # Private keys are created owner-only from the start rather than chmod-ed after the fact.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def load_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(f"{path} is not an RSA private key")
    return key


def make_ca(
    common_name: str = "dipsim test CA", days: int = 3650
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Return a new self-signed CA certificate and its key."""
    key = new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dipsim"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_cert(
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    *,
    kind: str,
    common_name: str,
    dip_ids: Iterable[str] = (),
    dns_names: Iterable[str] = (),
    ip_addresses: Iterable[str] = (),
    days: int = 825,
    not_before: dt.datetime | None = None,
    key: rsa.RSAPrivateKey | None = None,
) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """Issue a leaf certificate signed by the CA.

    ``kind`` is ``signing`` (message signatures), ``mtls`` (TLS client, also usable as a webhook
    server certificate when ``dns_names``/``ip_addresses`` are given) or ``server``. ``dip_ids``
    become ``urn:dip:id:`` URIs. ``not_before`` lets tests make certificates that are already
    expired (a ``not_before`` in the past with a short ``days``).
    """
    key = key or new_key()
    cert = _leaf_certificate(
        ca_cert,
        ca_key,
        public_key=key.public_key(),
        kind=kind,
        common_name=common_name,
        dip_ids=dip_ids,
        dns_names=dns_names,
        ip_addresses=ip_addresses,
        days=days,
        not_before=not_before,
    )
    return cert, key


def _leaf_certificate(
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    *,
    public_key: rsa.RSAPublicKey,
    kind: str,
    common_name: str,
    dip_ids: Iterable[str],
    dns_names: Iterable[str],
    ip_addresses: Iterable[str],
    days: int,
    not_before: dt.datetime | None,
) -> x509.Certificate:
    if kind not in {"signing", "mtls", "server"}:
        raise ValueError(f"unknown certificate kind {kind!r}")
    start = not_before or (_now() - dt.timedelta(minutes=5))
    sans: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"{DIP_ID_URI_PREFIX}{dip_id}") for dip_id in dip_ids
    ]
    sans += [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    usages = {
        "signing": [],
        "mtls": [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        "server": [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    }[kind]
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dipsim participants"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=kind == "signing",
                key_encipherment=kind != "signing",
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def write_pair(cert: x509.Certificate, key: rsa.RSAPrivateKey, prefix: Path) -> tuple[Path, Path]:
    """Write ``prefix.crt`` and ``prefix.key`` (owner-only) and return their paths."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    cert_path = prefix.with_name(prefix.name + ".crt")
    key_path = prefix.with_name(prefix.name + ".key")
    cert_path.write_bytes(cert_pem(cert))
    _write_private(key_path, key_pem(key))
    return cert_path, key_path


def init_ca(
    directory: str | Path, *, dip_id: str = DEFAULT_DIP_ID, extra_sans: Iterable[str] = ()
) -> CaPaths:
    """Create the CA folder if needed; existing files are kept, missing ones are made.

    Idempotent: running it twice changes nothing, so a demo can call it on every start.
    """
    paths = CaPaths(Path(directory))
    paths.root.mkdir(parents=True, exist_ok=True)
    if paths.ca_cert.exists() and paths.ca_key.exists():
        ca_cert, ca_key = load_cert(paths.ca_cert), load_key(paths.ca_key)
    else:
        ca_cert, ca_key = make_ca()
        write_pair(ca_cert, ca_key, paths.root / "ca")
    dns = ["localhost", *[s for s in extra_sans if not _is_ip(s)]]
    ips = ["127.0.0.1", *[s for s in extra_sans if _is_ip(s)]]
    wanted = {
        "server": {
            "kind": "server",
            "common_name": "localhost",
            "dns_names": dns,
            "ip_addresses": ips,
        },
        "dip-signing": {"kind": "signing", "common_name": "DIP signing", "dip_ids": [dip_id]},
        "dip-mtls": {"kind": "mtls", "common_name": "DIP client", "dip_ids": [dip_id]},
    }
    for stem, params in wanted.items():
        cert_path, key_path = paths.pair(stem)
        if not (cert_path.exists() and key_path.exists()):
            cert, key = issue_cert(ca_cert, ca_key, **params)  # type: ignore[arg-type]
            write_pair(cert, key, paths.root / stem)
    cert_path, key_path = paths.pair("dip-signing-expired")
    if not (cert_path.exists() and key_path.exists()):
        cert, key = issue_cert(
            ca_cert,
            ca_key,
            kind="signing",
            common_name="DIP signing (expired)",
            dip_ids=[dip_id],
            not_before=_now() - dt.timedelta(days=30),
            days=1,
        )
        write_pair(cert, key, paths.root / "dip-signing-expired")
    return paths


def issue_to_files(
    directory: str | Path,
    *,
    dip_ids: list[str],
    kind: str,
    out: str | Path,
    days: int = 825,
    common_name: str | None = None,
    sans: Iterable[str] = (),
    expired: bool = False,
) -> tuple[Path, Path]:
    """Issue a participant certificate from the CA in ``directory`` and write it to ``out``."""
    paths = CaPaths(Path(directory))
    ca_cert, ca_key = load_cert(paths.ca_cert), load_key(paths.ca_key)
    sans = list(sans)
    start = _now() - dt.timedelta(days=days + 1) if expired else None
    cert, key = issue_cert(
        ca_cert,
        ca_key,
        kind=kind,
        common_name=common_name or f"{kind} {'/'.join(dip_ids)}",
        dip_ids=dip_ids,
        dns_names=[s for s in sans if not _is_ip(s)],
        ip_addresses=[s for s in sans if _is_ip(s)],
        days=days,
        not_before=start,
    )
    return write_pair(cert, key, Path(out))


def sign_csr(
    directory: str | Path,
    csr_pem: bytes,
    *,
    kind: str,
    dip_ids: list[str],
    out: str | Path,
    days: int = 825,
) -> Path:
    """Sign a participant's certificate signing request with the CA in ``directory``, as the
    DIP's CA would: the key stays with whoever made the request (Busbar generates CSRs and keeps
    its keys), and the CA, not the requester, decides which DIP IDs the certificate covers. The
    subject's common name is kept. Writes the certificate (PEM) to ``out``."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise ValueError("the request's signature does not match its key")
    public_key = csr.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("the DIP issues certificates for RSA keys only")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else f"{kind} {'/'.join(dip_ids)}"
    paths = CaPaths(Path(directory))
    cert = _leaf_certificate(
        load_cert(paths.ca_cert),
        load_key(paths.ca_key),
        public_key=public_key,
        kind=kind,
        common_name=common_name,
        dip_ids=dip_ids,
        dns_names=(),
        ip_addresses=(),
        days=days,
        not_before=None,
    )
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(cert_pem(cert))
    return target


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def cert_dip_ids(cert: x509.Certificate) -> frozenset[str]:
    """Return the DIP IDs a certificate may act for (its ``urn:dip:id:`` subjectAltNames)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset()
    return frozenset(
        uri.removeprefix(DIP_ID_URI_PREFIX)
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
        if uri.startswith(DIP_ID_URI_PREFIX)
    )


def peercert_dip_ids(peercert: dict | None) -> frozenset[str]:
    """Same as :func:`cert_dip_ids` for the dict that ``ssl.SSLSocket.getpeercert()`` returns."""
    if not peercert:
        return frozenset()
    return frozenset(
        value.removeprefix(DIP_ID_URI_PREFIX)
        for kind, value in peercert.get("subjectAltName", ())
        if kind == "URI" and value.startswith(DIP_ID_URI_PREFIX)
    )
