"""The X-DIP-* request signature: round trip, every tamper case with its named error, and
interoperability with the ``openssl`` command line in both directions."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from messaging.dip.signing import (
    HEADER_CERTIFICATE,
    HEADER_CONTENT_HASH,
    HEADER_DATE,
    HEADER_SIGNATURE,
    SIGNATURE_HEADERS,
    SignatureError,
    VerifiedSignature,
    sign_request,
    verify_request,
)
from tests.messaging.conftest import Issued, Pki

URL = "https://dip.example.org:8443/dip-channel/IF-021"
BODY = b'[{"payload":{"CommonBlock":{"S0":{"interfaceID":"IF-021"}}}}]'
SKEW = dt.timedelta(minutes=5)

requires_openssl = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="the openssl command line is not installed"
)


def signed(
    issued: Issued, *, url: str = URL, body: bytes = BODY, now: dt.datetime | None = None
) -> dict[str, str]:
    return sign_request(
        method="POST",
        url=url,
        body=body,
        private_key=issued.key,
        certificate_pem=issued.certificate_pem,
        now=now,
    )


def verify(
    headers: dict[str, str],
    pki: Pki,
    *,
    url: str = URL,
    body: bytes = BODY,
    method: str = "POST",
    anchors: list[x509.Certificate] | None = None,
    now: dt.datetime | None = None,
) -> VerifiedSignature:
    return verify_request(
        method=method,
        url=url,
        body=body,
        headers=headers,
        trust_anchors=anchors if anchors is not None else [pki.ca.certificate],
        max_skew=SKEW,
        now=now,
    )


def failure(headers: dict[str, str], pki: Pki, **kwargs: Any) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify(headers, pki, **kwargs)
    assert caught.value.code == "RCP9999"
    return caught.value


def test_the_four_headers_have_the_dip_formats(pki: Pki) -> None:
    now = dt.datetime(2026, 6, 27, 14, 29, 9, 61_999, tzinfo=dt.UTC)
    headers = signed(pki.leaf, now=now)

    assert set(headers) == set(SIGNATURE_HEADERS)
    assert headers[HEADER_DATE] == "2026-06-27T14:29:09.061Z"
    assert headers[HEADER_CONTENT_HASH] == base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    assert base64.b64decode(headers[HEADER_CERTIFICATE]) == pki.leaf.certificate_pem
    assert len(base64.b64decode(headers[HEADER_SIGNATURE])) == 256  # RSA-2048


def test_a_signature_date_in_another_zone_is_written_in_utc(pki: Pki) -> None:
    paris = dt.timezone(dt.timedelta(hours=2))
    headers = signed(pki.leaf, now=dt.datetime(2026, 6, 27, 16, 0, 0, tzinfo=paris))

    assert headers[HEADER_DATE] == "2026-06-27T14:00:00.000Z"


def test_a_signed_request_verifies_and_names_its_certificate(pki: Pki) -> None:
    result = verify(signed(pki.leaf), pki)

    certificate = pki.leaf.certificate
    assert result.fingerprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex()
    assert result.subject == "CN=signer"
    assert result.serial == certificate.serial_number
    assert result.not_after == certificate.not_valid_after_utc


def test_header_names_and_url_case_do_not_matter(pki: Pki) -> None:
    headers = {name.lower(): value for name, value in signed(pki.leaf).items()}
    verify(headers, pki, url=URL.upper().replace("HTTPS", "https"))
    # neither the exact nor the lowercase spelling: found by the scan
    verify({name.upper(): value for name, value in signed(pki.leaf).items()}, pki)


@pytest.mark.parametrize("name", SIGNATURE_HEADERS)
def test_it_names_a_missing_header(pki: Pki, name: str) -> None:
    headers = signed(pki.leaf)
    del headers[name]

    error = failure(headers, pki)

    assert error.kind == "missing_header"
    assert name in error.reason


def test_it_rejects_a_tampered_body_as_a_hash_mismatch(pki: Pki) -> None:
    error = failure(signed(pki.leaf), pki, body=BODY.replace(b"IF-021", b"IF-022"))

    assert error.kind == "hash_mismatch"


def test_it_rejects_a_body_whose_hash_header_was_forged_too(pki: Pki) -> None:
    other = BODY.replace(b"IF-021", b"IF-022")
    headers = signed(pki.leaf)
    headers[HEADER_CONTENT_HASH] = base64.b64encode(hashlib.sha256(other).digest()).decode()

    assert failure(headers, pki, body=other).kind == "bad_signature"


def test_it_rejects_a_signature_made_for_another_url(pki: Pki) -> None:
    error = failure(signed(pki.leaf), pki, url=URL.replace("IF-021", "IF-041"))

    assert error.kind == "bad_signature"


def test_it_rejects_a_signature_made_for_another_method(pki: Pki) -> None:
    assert failure(signed(pki.leaf), pki, method="DELETE").kind == "bad_signature"


def test_it_rejects_a_changed_date_even_within_the_skew(pki: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    headers = signed(pki.leaf, now=now)
    headers[HEADER_DATE] = (now + dt.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    assert failure(headers, pki, now=now).kind == "bad_signature"


def test_it_rejects_a_date_outside_the_allowed_skew(pki: Pki) -> None:
    now = dt.datetime.now(dt.UTC)
    old = signed(pki.leaf, now=now - SKEW - dt.timedelta(seconds=1))
    ahead = signed(pki.leaf, now=now + SKEW + dt.timedelta(seconds=1))

    assert failure(old, pki, now=now).kind == "date_skew"
    assert failure(ahead, pki, now=now).kind == "date_skew"
    verify(signed(pki.leaf, now=now - SKEW + dt.timedelta(seconds=1)), pki, now=now)


def test_the_skew_is_judged_on_the_given_clock_up_to_and_including_its_limit(pki: Pki) -> None:
    """Days away from the real clock (within the certificate's validity), so only the ``now``
    given is the judge; exactly the allowed skew is within it, a second more is not."""
    signed_at = (dt.datetime.now(dt.UTC) + dt.timedelta(days=10)).replace(microsecond=0)
    headers = signed(pki.leaf, now=signed_at)

    result = verify(headers, pki, now=signed_at + SKEW)
    assert result.signed_at == signed_at
    assert result.certificate == pki.leaf.certificate
    assert verify(headers, pki, now=signed_at - SKEW).signed_at == signed_at
    assert failure(headers, pki, now=signed_at + SKEW + dt.timedelta(seconds=1)).kind == "date_skew"
    assert failure(headers, pki, now=signed_at - SKEW - dt.timedelta(seconds=1)).kind == "date_skew"


@pytest.mark.parametrize("value", ["yesterday", "2026-06-27 14:29:09", "2026-06-27T14:29:09.061"])
def test_it_rejects_a_malformed_date(pki: Pki, value: str) -> None:
    headers = signed(pki.leaf)
    headers[HEADER_DATE] = value

    assert failure(headers, pki).kind == "malformed_date"


def test_it_rejects_a_certificate_from_another_ca(pki: Pki) -> None:
    error = failure(signed(pki.rogue), pki)

    assert error.kind == "untrusted_certificate"
    assert "rogue signer" in error.reason


def test_it_rejects_a_self_signed_certificate_that_copies_a_trusted_name(pki: Pki) -> None:
    from tests.messaging.conftest import make_certificate

    impostor = make_certificate("Busbar test CA", ca=True)

    assert failure(signed(impostor), pki).kind == "untrusted_certificate"


def test_it_rejects_an_expired_certificate(pki: Pki) -> None:
    error = failure(signed(pki.expired), pki)

    assert error.kind == "certificate_expired"
    assert "expired signer" in error.reason


def test_it_rejects_a_certificate_not_yet_valid(pki: Pki) -> None:
    assert failure(signed(pki.not_yet_valid), pki).kind == "certificate_not_yet_valid"


def test_it_rejects_a_certificate_header_that_is_not_pem(pki: Pki) -> None:
    headers = signed(pki.leaf)
    headers[HEADER_CERTIFICATE] = base64.b64encode(b"not a certificate").decode()

    assert failure(headers, pki).kind == "malformed_certificate"


def test_it_rejects_a_signature_that_is_not_base64(pki: Pki) -> None:
    headers = signed(pki.leaf)
    headers[HEADER_SIGNATURE] = "%%%"

    assert failure(headers, pki).kind == "malformed_signature"


def test_it_rejects_a_trusted_certificate_presented_with_another_key(pki: Pki) -> None:
    headers = sign_request(
        method="POST",
        url=URL,
        body=BODY,
        private_key=pki.rogue.key,
        certificate_pem=pki.leaf.certificate_pem,
    )

    assert failure(headers, pki).kind == "bad_signature"


def test_a_chain_sent_with_its_intermediate_reaches_the_root(pki: Pki) -> None:
    leaf = pki.via_intermediate
    headers = sign_request(
        method="POST",
        url=URL,
        body=BODY,
        private_key=leaf.key,
        certificate_pem=leaf.certificate_pem + pki.intermediate.certificate_pem,
    )

    assert verify(headers, pki).subject == "CN=signer via intermediate"
    assert failure(signed(leaf), pki).kind == "untrusted_certificate"


@pytest.mark.parametrize("basic_constraints", [False, None], ids=["not a CA", "unconstrained"])
def test_a_certificate_that_is_not_a_ca_cannot_vouch_for_another(
    pki: Pki, basic_constraints: bool | None
) -> None:
    """A certificate issued by the trusted CA, but not as a CA (or without saying), signing a
    signer of its own: the chain must stop there."""
    from tests.messaging.conftest import make_certificate

    pretender = make_certificate("pretender", issuer=pki.ca, ca=basic_constraints)
    leaf = make_certificate("signer via a pretender", issuer=pretender)
    headers = sign_request(
        method="POST", url=URL, body=BODY, private_key=leaf.key,
        certificate_pem=leaf.certificate_pem + pretender.certificate_pem,
    )  # fmt: skip

    assert failure(headers, pki).kind == "untrusted_certificate"


# ---- openssl, an independent implementation ---------------------------------------------------


def _openssl(*args: str | Path, data: bytes | None = None) -> bytes:
    done = subprocess.run(
        ["openssl", *(str(a) for a in args)], input=data, capture_output=True, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@requires_openssl
def test_openssl_verifies_what_busbar_signs(pki: Pki, tmp_path: Path) -> None:
    headers = signed(pki.leaf)
    signing_input = f"POST;{URL.lower()};{headers[HEADER_DATE]};{headers[HEADER_CONTENT_HASH]}"
    (tmp_path / "input").write_bytes(signing_input.encode())
    (tmp_path / "sig").write_bytes(base64.b64decode(headers[HEADER_SIGNATURE]))
    (tmp_path / "cert.pem").write_bytes(base64.b64decode(headers[HEADER_CERTIFICATE]))
    _openssl("x509", "-in", tmp_path / "cert.pem", "-pubkey", "-noout", "-out", tmp_path / "pub")
    (tmp_path / "body").write_bytes(BODY)
    digest = _openssl("dgst", "-sha256", "-binary", tmp_path / "body")

    out = _openssl(
        "dgst", "-sha256", "-verify", tmp_path / "pub", "-signature", tmp_path / "sig",
        tmp_path / "input",
    )  # fmt: skip

    assert out.strip() == b"Verified OK"
    assert base64.b64encode(digest).decode() == headers[HEADER_CONTENT_HASH]


@requires_openssl
def test_busbar_verifies_what_openssl_signs(pki: Pki, tmp_path: Path) -> None:
    key_path, body_path = tmp_path / "key.pem", tmp_path / "body"
    key_path.write_bytes(pki.leaf.key_pem)
    body_path.write_bytes(BODY)
    body_hash = base64.b64encode(_openssl("dgst", "-sha256", "-binary", body_path)).decode()
    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.123Z")
    (tmp_path / "input").write_bytes(f"POST;{URL.lower()};{date};{body_hash}".encode())
    signature = _openssl("dgst", "-sha256", "-sign", key_path, tmp_path / "input")
    pem = pki.leaf.certificate.public_bytes(serialization.Encoding.PEM)
    headers = {
        HEADER_DATE: date,
        HEADER_CONTENT_HASH: body_hash,
        HEADER_SIGNATURE: base64.b64encode(signature).decode(),
        HEADER_CERTIFICATE: base64.b64encode(pem).decode(),
    }

    result = verify(headers, pki)

    assert re.fullmatch(r"[0-9a-f]{64}", result.fingerprint_sha256)
    assert result.subject == "CN=signer"


def rsa_verifies(certificate: x509.Certificate, signature_b64: str, text: bytes) -> bool:
    """An independent check of a signature over exactly ``text``."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = certificate.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    try:
        key.verify(base64.b64decode(signature_b64), text, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


def test_a_lower_case_method_is_signed_upper_cased(pki: Pki) -> None:
    headers = sign_request(
        method="post", url=URL, body=BODY, private_key=pki.leaf.key,
        certificate_pem=pki.leaf.certificate_pem,
    )  # fmt: skip
    text = f"{{}};{URL.lower()};{headers[HEADER_DATE]};{headers[HEADER_CONTENT_HASH]}"

    assert rsa_verifies(
        pki.leaf.certificate, headers[HEADER_SIGNATURE], text.format("POST").encode()
    )
    assert not rsa_verifies(
        pki.leaf.certificate, headers[HEADER_SIGNATURE], text.format("post").encode()
    )


def test_a_lower_case_method_is_verified_upper_cased(pki: Pki) -> None:
    """A signature over ``POST;...`` (as the DIP makes it) verifies when the request's method
    reaches the verifier in lower case."""
    from cryptography.hazmat.primitives.asymmetric import padding

    date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body_hash = base64.b64encode(hashlib.sha256(BODY).digest()).decode()
    text = f"POST;{URL.lower()};{date};{body_hash}".encode()
    headers = {
        HEADER_DATE: date,
        HEADER_CONTENT_HASH: body_hash,
        HEADER_SIGNATURE: base64.b64encode(
            pki.leaf.key.sign(text, padding.PKCS1v15(), hashes.SHA256())
        ).decode(),
        HEADER_CERTIFICATE: base64.b64encode(pki.leaf.certificate_pem).decode(),
    }

    assert verify(headers, pki, method="post").subject == "CN=signer"


def test_a_remembered_chain_is_trusted_only_with_its_anchors_and_its_dates(pki: Pki) -> None:
    """The verified path of a signing certificate is remembered between requests, but only for
    the same trust anchors, and every certificate's dates are still judged at each request."""
    headers = signed(pki.leaf)
    assert verify(headers, pki).subject  # remembered now
    other_ca = pki.other_ca.certificate
    assert failure(headers, pki, anchors=[other_ca]).kind == "untrusted_certificate"
    after_expiry = pki.leaf.certificate.not_valid_after_utc + dt.timedelta(minutes=1)
    late = signed(pki.leaf, now=after_expiry)
    assert failure(late, pki, now=after_expiry).kind == "certificate_expired"
    assert (
        verify(headers, pki).fingerprint_sha256
        == pki.leaf.certificate.fingerprint(hashes.SHA256()).hex()
    )
