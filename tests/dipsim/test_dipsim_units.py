"""Small pieces: MPAN check digits, timestamps, retry classification, the spec loader, dipsim's own
schemas against the official variant list, and the API's answers to unknown paths and methods."""

from __future__ import annotations

import base64
import datetime as dt
import os
import random
import stat

import httpx
import pytest
from conftest import ACME, Pki, Running, StartDipsim
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dipsim import codes, messages, pki
from dipsim.engine import CHANNELS
from dipsim.signing import (
    H_DATE,
    H_HASH,
    H_SIGNATURE,
    SignatureError,
    SignatureVerifier,
    Signer,
    check_signing_profile,
)
from dipsim.store import Store
from dipsim.validation import Validators, mpan_check_digit_ok, parse_timestamp


@pytest.mark.parametrize(
    ("mpan", "ok"),
    [
        ("2000056535971", True),
        ("1900012374324", True),
        ("2000056535972", False),
        ("1234567890123", False),
        ("12345", False),
    ],
)
def test_mpan_check_digit(mpan: str, ok: bool) -> None:
    assert mpan_check_digit_ok(mpan) is ok


def test_generated_mpans_carry_valid_check_digits_and_broken_ones_do_not() -> None:
    rng = random.Random(3)
    for _ in range(200):
        mpan = messages.make_mpan(rng)
        assert mpan_check_digit_ok(mpan)
        assert not mpan_check_digit_ok(messages.break_check_digit(mpan))


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-11-27T10:00:00+00:00", True),
        ("2026-11-27T10:00:00+01:00", True),
        ("2026-11-27T10:00:00Z", False),
        ("2026-11-27T10:00:00.000+00:00", False),
        ("2026-13-27T10:00:00+00:00", False),
        (None, False),
    ],
)
def test_dip_timestamps_are_exactly_25_characters(value: str | None, ok: bool) -> None:
    assert (parse_timestamp(value) is not None) is ok


def test_retry_classification_follows_the_spec() -> None:
    assert [
        s
        for s in (400, 401, 403, 404, 405, 406, 408, 413, 429, 500, 501, 502, 503, 504, 505)
        if codes.should_retry(s)
    ] == [
        408,
        429,
        500,
        501,
        502,
        503,
        504,
    ]


def test_if021_days_have_48_utc_periods_ending_at_the_period_end() -> None:
    day = dt.date(2026, 3, 29)  # the spring clock change: still 48 UTC periods
    payload = messages.if021(
        sender="3000000001",
        mpan=messages.make_mpan(random.Random(1)),
        day=day,
        rng=random.Random(2),
    )
    periods = payload["CustomBlock"]["B900"]["settlementDayConsumptionPeriods"][0][
        "consumptionPeriods"
    ]
    assert len(periods) == 48
    assert periods[0]["sp"] == "2026-03-29T00:30:00+00:00"
    assert periods[-1]["sp"] == "2026-03-30T00:00:00+00:00"


def test_every_builtin_variant_exists_in_the_official_spec(
    builtin_validators: Validators, official_validators: Validators
) -> None:
    assert official_validators.spec is not None
    builtin = builtin_validators.variant_keys()
    assert len(builtin) >= 30
    assert builtin <= official_validators.variant_keys()
    for interface_id, event in builtin:
        assert official_validators.schema_versions(interface_id, event) == ("011",)


def test_the_spec_loader_turns_nullable_into_json_schema(official_validators: Validators) -> None:
    spec = official_validators.spec
    assert spec is not None
    correlation = spec.definitions["DataTypes__DT-011N-CorrelationID"]
    assert correlation["type"] == ["string", "null"]
    assert "MSG1006" in spec.response_codes
    assert "RCP9999" in spec.response_codes
    # Every MSG code dipsim can produce is one the specification defines.
    assert set(codes.MSG_TEXT) <= set(spec.response_codes)
    assert len(spec.interfaces()) >= 50


def test_unknown_paths_and_methods(start_dipsim: StartDipsim) -> None:
    dip: Running = start_dipsim()
    acme = dip.client()
    assert acme.request("POST", "/dip-channel/IF-999", []).status_code == 404
    with httpx.Client(verify=acme.ssl_context) as http:
        assert (
            http.get(
                f"{dip.base_url}/dip-channel/IF-021", headers={"X-API-Key": "key-acme"}
            ).status_code
            == 405
        )
        assert http.get(f"{dip.base_url}/nothing-here").status_code == 404
    health = httpx.get(f"{dip.admin_url}/admin/health").json()
    assert health["status"] == "ok"
    assert health["env"] == "UIT"


def test_the_channels_dipsim_serves_are_the_specifications_dt000(
    official_validators: Validators,
) -> None:
    spec = official_validators.spec
    assert spec is not None
    assert set(spec.definitions["DataTypes__DT-000-InterfaceID"]["enum"]) == set(CHANNELS)


def _leaf(
    ca_cert: x509.Certificate,
    ca_key: rsa.RSAPrivateKey,
    *,
    usage: x509.KeyUsage | None,
    extended: list[x509.ObjectIdentifier] | None,
) -> x509.Certificate:
    key = pki.new_key()
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if usage is not None:
        builder = builder.add_extension(usage, critical=True)
    if extended is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _key_usage(*, digital_signature: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=True,
        key_encipherment=not digital_signature,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def test_only_a_signing_profile_may_sign_messages() -> None:
    ca_cert, ca_key = pki.make_ca("profile test CA")
    signing, _ = pki.issue_cert(ca_cert, ca_key, kind="signing", common_name="s")
    mtls, _ = pki.issue_cert(ca_cert, ca_key, kind="mtls", common_name="m")
    server, _ = pki.issue_cert(ca_cert, ca_key, kind="server", common_name="w")
    check_signing_profile(signing)
    refused = {
        "mTLS": mtls,
        "server": server,
        "client only": _leaf(
            ca_cert,
            ca_key,
            usage=_key_usage(digital_signature=True),
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
        ),
        "no key usage": _leaf(ca_cert, ca_key, usage=None, extended=None),
        "no digitalSignature": _leaf(
            ca_cert, ca_key, usage=_key_usage(digital_signature=False), extended=None
        ),
    }
    reasons = {}
    for name, cert in refused.items():
        with pytest.raises(SignatureError) as caught:
            check_signing_profile(cert)
        reasons[name] = str(caught.value)
    assert "not a signing certificate" in reasons["mTLS"]
    assert "not a signing certificate" in reasons["client only"]
    assert "no key usage" in reasons["no key usage"]
    assert "does not allow digital signatures" in reasons["no digitalSignature"]
    # A signing certificate that also names a non-TLS usage (document signing) is still one.
    check_signing_profile(
        _leaf(
            ca_cert,
            ca_key,
            usage=_key_usage(digital_signature=True),
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION],
        )
    )


def test_the_simulators_database_is_readable_by_its_owner_only(tmp_path) -> None:
    previous = os.umask(0o022)  # the usual umask: new files world-readable unless asked otherwise
    try:
        store = Store(tmp_path / "data")
        store.upsert_participant(dip_id="1000000001", mpid="ACME", role="SUP", api_key="key-acme")
        files = [p for p in (tmp_path / "data").iterdir() if p.name.startswith("dipsim.sqlite3")]
        assert {p.name for p in files} >= {"dipsim.sqlite3", "dipsim.sqlite3-wal"}
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {
            p.name: 0o600 for p in files
        }
        store.close()
        # A file left world-readable by an earlier version is tightened on the next start.
        (tmp_path / "data" / "dipsim.sqlite3").chmod(0o644)
        Store(tmp_path / "data").close()
        assert stat.S_IMODE((tmp_path / "data" / "dipsim.sqlite3").stat().st_mode) == 0o600
    finally:
        os.umask(previous)


def test_dipsim_signs_and_verifies_a_lower_case_method_upper_cased(test_pki: Pki) -> None:
    """The method in the signed string is upper case whatever case the caller used, on both of
    dipsim's sides (its signer, for pushes, and its verifier, for requests)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signer = Signer.from_files(
        str(test_pki.prefix("acme-sign.crt")), str(test_pki.prefix("acme-sign.key"))
    )
    url, body = "https://127.0.0.1:8443/dip-channel/IF-031", b"[]"
    headers = signer.headers("post", url, body)
    public_key = signer.key.public_key()
    signature = base64.b64decode(headers[H_SIGNATURE])
    text = f"{{}};{url.lower()};{headers[H_DATE]};{headers[H_HASH]}"
    public_key.verify(signature, text.format("POST").encode(), padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public_key.verify(
            signature, text.format("post").encode(), padding.PKCS1v15(), hashes.SHA256()
        )

    verifier = SignatureVerifier([pki.load_cert(test_pki.ca.ca_cert)])
    upper = signer.headers("POST", url, body)
    assert verifier.verify(upper, "post", url, body).dip_ids == frozenset({ACME})
    with pytest.raises(SignatureError, match="signature does not verify"):
        verifier.verify(upper, "put", url, body)
