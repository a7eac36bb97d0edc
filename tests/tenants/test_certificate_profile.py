"""One key profile and readable certificates, for import (API and console) and CSR generation.

Each case builds the offending certificate with ``cryptography`` and sends it through the real
endpoints; every one used to answer 500 or be accepted. Now each is a 400 (API) or a named error
(console) and nothing is stored.
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519
from cryptography.x509.oid import ExtensionOID, NameOID, ObjectIdentifier
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from tenants import services
from tenants.models import Certificate, Connection
from tests.conftest import PASSWORD
from tests.pki import TestCA, key_pem, new_key, pem


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture(scope="module")
def long_named_ca() -> TestCA:
    """A CA whose own name (so every certificate's issuer) is longer than the issuer column."""
    ca = TestCA.create()
    ca.cert = self_signed(ca.key, long_name())
    return ca


def long_name() -> x509.Name:
    units = [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{i}" * 60) for i in range(9)]
    return x509.Name([*units, x509.NameAttribute(NameOID.COMMON_NAME, "dip.acme.example")])


def self_signed(key, name: x509.Name) -> x509.Certificate:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, hashes.SHA256())
    )


def leaf(
    ca: TestCA,
    public_key,
    *,
    subject: x509.Name | None = None,
    extensions: list[x509.ExtensionType] | None = None,
) -> x509.Certificate:
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dip.acme")]))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=90))
    )
    for extension in extensions or []:
        builder = builder.add_extension(extension, critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def with_duplicate_key_usage(ca: TestCA, key) -> bytes:
    """A certificate carrying KeyUsage twice. No builder will write that, so a private extension
    whose OID encodes to as many bytes is renamed to KeyUsage in the DER (the signature then no
    longer verifies, which import never gets to)."""
    placeholder = ObjectIdentifier("2.5.29.99")
    cert = leaf(
        ca,
        key.public_key(),
        extensions=[
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            x509.UnrecognizedExtension(placeholder, b"\x03\x02\x07\x80"),
        ],
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    assert der.count(b"\x06\x03\x55\x1d\x63") == 1
    der = der.replace(b"\x06\x03\x55\x1d\x63", b"\x06\x03\x55\x1d\x0f")
    return pem(x509.load_der_x509_certificate(der))


def bundle_for(case: str, ca: TestCA, long_named_ca: TestCA) -> tuple[str, bytes, str]:
    """(purpose, PEM certificate + key, the words the refusal must contain) for each case."""
    rsa_key = new_key()
    if case == "malformed key usage":
        bad = x509.UnrecognizedExtension(ExtensionOID.KEY_USAGE, b"\x04\x01\x00")
        return (
            "mtls",
            pem(leaf(ca, rsa_key.public_key(), extensions=[bad])) + key_pem(rsa_key),
            "malformed extension",
        )
    if case == "malformed extended key usage":
        bad = x509.UnrecognizedExtension(ExtensionOID.EXTENDED_KEY_USAGE, b"\x30\x03\x02\x01\x01")
        return (
            "mtls",
            pem(leaf(ca, rsa_key.public_key(), extensions=[bad])) + key_pem(rsa_key),
            "malformed extension",
        )
    if case == "duplicate extension":
        return (
            "signing",
            with_duplicate_key_usage(ca, rsa_key) + key_pem(rsa_key),
            ("keyUsage extension more than once"),
        )
    if case == "subject too long":
        cert = leaf(ca, rsa_key.public_key(), subject=long_name())
        return "signing", pem(cert) + key_pem(rsa_key), "subject is"
    if case == "issuer too long":
        cert = leaf(long_named_ca, rsa_key.public_key())
        return "signing", pem(cert) + key_pem(rsa_key), "issuer is"
    other_keys = {
        "dsa key": (dsa.generate_private_key(key_size=2048), "the key is DSA"),
        "ed25519 key": (ed25519.Ed25519PrivateKey.generate(), "the key is Ed25519"),
        "secp256k1 key": (ec.generate_private_key(ec.SECP256K1()), "curve secp256k1"),
        "p-521 key": (ec.generate_private_key(ec.SECP521R1()), "curve secp521r1"),
    }
    if case in other_keys:
        key, words = other_keys[case]
        return "mtls", pem(leaf(ca, key.public_key())) + key_pem(key), words
    if case == "ec key for signing":
        key = ec.generate_private_key(ec.SECP256R1())
        return "signing", pem(leaf(ca, key.public_key())) + key_pem(key), "needs an RSA key"
    raise AssertionError(case)


CASES = [
    "malformed key usage",
    "malformed extended key usage",
    "duplicate extension",
    "subject too long",
    "issuer too long",
    "dsa key",
    "ed25519 key",
    "secp256k1 key",
    "p-521 key",
    "ec key for signing",
]


@pytest.fixture
def acme(world):
    with tenant_context(world.acme.id):
        key = services.issue_api_credential(
            name="m", scopes=["read", "certificates"], environment="UIT"
        ).key
        connection = Connection.objects.get()
    return {"key": key, "connection": connection.id, "tenant": world.acme.id}


def nothing_stored(tenant_id) -> bool:
    with tenant_context(tenant_id):
        return not Certificate.objects.exists()


@pytest.mark.parametrize("case", CASES)
def test_the_api_refuses_with_a_named_400(acme, ca, long_named_ca, case):
    purpose, bundle, words = bundle_for(case, ca, long_named_ca)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {acme['key']}")
    response = api.post(
        "/api/v1/certificates/",
        {
            "connection_id": acme["connection"],
            "purpose": purpose,
            "bundle_base64": base64.b64encode(bundle).decode(),
        },
        format="json",
    )
    assert response.status_code == 400, response.content
    problems = " ".join(response.json()["errors"]["non_field_errors"])
    assert words in problems
    assert nothing_stored(acme["tenant"])


@pytest.mark.parametrize("case", CASES)
def test_the_console_refuses_with_a_named_error(acme, ca, long_named_ca, case):
    purpose, bundle, words = bundle_for(case, ca, long_named_ca)
    alice = Client()
    assert alice.login(username="alice", password=PASSWORD)
    response = alice.post(
        "/certificates/import/",
        {
            "connection": acme["connection"],
            "purpose": purpose,
            "bundle": SimpleUploadedFile("bundle.pem", bundle),
        },
        follow=True,
    )
    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "The certificate was not imported: " in page
    assert words in page
    assert nothing_stored(acme["tenant"])


def test_the_profile_still_takes_the_keys_the_dip_uses(acme, ca):
    """RSA for signing; EC on P-256 and P-384 for mTLS."""
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {acme['key']}")
    for purpose, key in [
        ("signing", new_key(3072)),
        ("mtls", ec.generate_private_key(ec.SECP256R1())),
        ("mtls", ec.generate_private_key(ec.SECP384R1())),
    ]:
        response = api.post(
            "/api/v1/certificates/",
            {
                "connection_id": acme["connection"],
                "purpose": purpose,
                "bundle_base64": base64.b64encode(
                    pem(ca.issue(key.public_key())) + key_pem(key)
                ).decode(),
            },
            format="json",
        )
        assert response.status_code == 201, response.content
    listed = api.get("/api/v1/certificates/").json()
    assert sorted(c["key_type"] for c in listed) == ["EC secp256r1", "EC secp384r1", "RSA"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"common_name": "a" * 56 + ".acme.example"}, "common name is 69 characters long"),
        ({"organization": "O" * 65}, "organisation is 65 characters long"),
        ({"organizational_unit": "U" * 65}, "organisational unit is 65 characters long"),
        ({"country": "ÄÖ"}, "two-letter code"),
    ],
)
def test_csr_generation_refuses_names_a_certificate_cannot_hold(acme, fields, words):
    alice = Client()
    assert alice.login(username="alice", password=PASSWORD)
    response = alice.post(
        "/certificates/csr/",
        {
            "connection": acme["connection"],
            "purpose": "signing",
            "common_name": "dip.acme.example",
            "organization": "Acme",
            "country": "GB",
            "key_size": 2048,
            **fields,
        },
        follow=True,
    )
    assert response.status_code == 200
    assert words in html.unescape(response.content.decode())
    assert nothing_stored(acme["tenant"])
