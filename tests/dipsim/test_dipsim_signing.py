"""Message signatures: interoperability with the openssl command line in both directions, and the
refusals the DIP gives for every way a signature can be wrong."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from conftest import ACME, Running, StartDipsim, StartReceiver

from dipsim import messages
from dipsim.client import client_context
from dipsim.signing import H_CERT, H_DATE, H_HASH, H_SIGNATURE, signature_date

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command line"
)


def openssl(*args: str, data: bytes | None = None) -> bytes:
    result = subprocess.run(["openssl", *args], input=data, capture_output=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def openssl_hash(body: bytes) -> str:
    return base64.b64encode(openssl("dgst", "-sha256", "-binary", data=body)).decode()


def openssl_sign(key: Path, text: bytes) -> str:
    return base64.b64encode(openssl("dgst", "-sha256", "-sign", str(key), data=text)).decode()


def openssl_verify(cert_pem: bytes, text: bytes, signature_b64: str, tmp_path: Path) -> bool:
    (tmp_path / "cert.pem").write_bytes(cert_pem)
    (tmp_path / "pub.pem").write_bytes(
        openssl("x509", "-in", str(tmp_path / "cert.pem"), "-pubkey", "-noout")
    )
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(signature_b64))
    result = subprocess.run(
        [
            "openssl",
            "dgst",
            "-sha256",
            "-verify",
            str(tmp_path / "pub.pem"),
            "-signature",
            str(tmp_path / "sig.bin"),
        ],
        input=text,
        capture_output=True,
        check=False,
    )
    return result.returncode == 0 and b"Verified OK" in result.stdout


def request_body(sender: str = ACME) -> bytes:
    """A valid batch ACME (a supplier) may send: one IF-031 to the simulated Registration Service."""
    payload = messages.appointment(
        "IF-031",
        service="DS",
        sender=sender,
        role="SUP",
        mpan=messages.make_mpan(random.Random(7)),
        supplier=(sender, "ACME"),
        provider=("3000000001", "SDSA"),
        effective="2026-12-10T00:00:00+00:00",
        recipients=["4000000001"],
    )
    return json.dumps([{"payload": payload}]).encode()


def post_signed_by_openssl(
    dip: Running, body: bytes, *, key: Path, cert: Path, date: str | None = None
) -> httpx.Response:
    url = f"{dip.base_url}/dip-channel/IF-031"
    date = date or signature_date()
    body_hash = openssl_hash(body)
    text = f"POST;{url.lower()};{date};{body_hash}".encode()
    headers = {
        "X-API-Key": "key-acme",
        "Content-Type": "application/json",
        H_DATE: date,
        H_HASH: body_hash,
        H_SIGNATURE: openssl_sign(key, text),
        H_CERT: base64.b64encode(cert.read_bytes()).decode(),
    }
    context = client_context(
        dip.pki.ca.ca_cert, dip.pki.prefix("acme-mtls.crt"), dip.pki.prefix("acme-mtls.key")
    )
    with httpx.Client(verify=context) as http:
        return http.post(url, content=body, headers=headers)


def test_dipsim_accepts_a_request_signed_by_openssl(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    pki = dip.pki
    response = post_signed_by_openssl(
        dip, request_body(), key=pki.prefix("acme-sign.key"), cert=pki.prefix("acme-sign.crt")
    )
    assert response.status_code == 201, response.text
    assert response.json()["messageArray"][0]["message"] == "MSG0000 - Success"


def test_openssl_verifies_the_signature_of_a_dipsim_push(
    start_dipsim: StartDipsim, receiver: StartReceiver, tmp_path: Path
) -> None:
    dip = start_dipsim()
    hook = receiver()
    acme = dip.client()
    assert acme.register_webhook("IF-032", ACME, hook.url).status_code == 201
    assert acme.send("IF-031", [json.loads(request_body())[0]["payload"]]).status_code == 201
    dip.wait(lambda: hook.requests, what="the IF-032 push")
    push = hook.requests[0]
    headers = {k.lower(): v for k, v in push["headers"].items()}
    assert openssl_hash(push["body"]) == headers[H_HASH.lower()]
    cert_pem = base64.b64decode(headers[H_CERT.lower()])
    assert cert_pem.startswith(b"-----BEGIN CERTIFICATE-----\n")
    text = f"POST;{hook.url.lower()};{headers[H_DATE.lower()]};{headers[H_HASH.lower()]}".encode()
    assert openssl_verify(cert_pem, text, headers[H_SIGNATURE.lower()], tmp_path)
    # The same check with one byte of the signed string changed must fail, or the check proves nothing.
    assert not openssl_verify(
        cert_pem, text.replace(b"POST", b"post"), headers[H_SIGNATURE.lower()], tmp_path
    )
    (tmp_path / "leaf.pem").write_bytes(cert_pem)
    assert b"OK" in openssl(
        "verify", "-CAfile", str(dip.pki.ca.ca_cert), str(tmp_path / "leaf.pem")
    )
    # The DIP authenticates itself to the webhook with its own client certificate.
    assert "urn:dip:id:0000000000" in json.dumps(push["peer"])


def test_it_refuses_a_stale_signature_date(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim(skew_seconds=60)
    stale = signature_date(dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5))
    response = post_signed_by_openssl(
        dip,
        request_body(),
        key=dip.pki.prefix("acme-sign.key"),
        cert=dip.pki.prefix("acme-sign.crt"),
        date=stale,
    )
    assert response.status_code == 401
    assert "skew" in response.text


def test_it_refuses_a_body_that_does_not_match_the_hash(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    acme = dip.client()
    url = f"{dip.base_url}/dip-channel/IF-031"
    body = request_body()
    headers = {"X-API-Key": "key-acme", **acme.signer.headers("POST", url, body)}
    with httpx.Client(verify=acme.ssl_context) as http:
        response = http.post(url, content=body + b" ", headers=headers)
    assert response.status_code == 401
    assert "content hash" in response.text


def test_it_refuses_a_signature_over_another_url(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    acme = dip.client()
    body = request_body()
    headers = {
        "X-API-Key": "key-acme",
        **acme.signer.headers("POST", f"{dip.base_url}/dip-channel/IF-032", body),
    }
    with httpx.Client(verify=acme.ssl_context) as http:
        response = http.post(f"{dip.base_url}/dip-channel/IF-031", content=body, headers=headers)
    assert response.status_code == 401
    assert "does not verify" in response.text


@pytest.mark.parametrize(
    ("sign", "status", "reason"),
    [
        ("rogue-sign", 401, "trusted CA"),
        ("acme-expired-sign", 401, "expired"),
        ("globex-sign", 403, "does not belong"),
        # acme's own mTLS certificate, from the trusted CA, is not a signing certificate
        ("acme-mtls", 401, "not a signing certificate"),
    ],
)
def test_it_refuses_signing_certificates_it_must_not_trust(
    start_dipsim: StartDipsim, sign: str, status: int, reason: str
) -> None:
    dip = start_dipsim()
    response = dip.client(sign=sign).request("POST", "/dip-channel/IF-031", raw=request_body())
    assert response.status_code == status
    assert reason in response.text


def test_it_refuses_missing_signature_headers_and_unknown_api_keys(
    start_dipsim: StartDipsim,
) -> None:
    dip = start_dipsim()
    acme = dip.client()
    with httpx.Client(verify=acme.ssl_context) as http:
        response = http.post(
            f"{dip.base_url}/dip-channel/IF-031",
            content=request_body(),
            headers={"X-API-Key": "key-acme"},
        )
    assert response.status_code == 401
    assert "missing header" in response.text
    assert (
        dip.client(api_key="nope")
        .request("POST", "/dip-channel/IF-031", raw=request_body())
        .status_code
        == 401
    )


def test_the_url_in_the_signed_string_is_case_insensitive(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    acme = dip.client()
    body = request_body()
    url = f"{dip.base_url}/DIP-Channel/if-031"
    headers = {"X-API-Key": "key-acme", **acme.signer.headers("POST", url, body)}
    with httpx.Client(verify=acme.ssl_context) as http:
        response = http.post(url, content=body, headers=headers)
    # The DIP does not enforce URL case: the channel is found and the lower-cased URL verifies.
    assert response.status_code == 201, response.text
