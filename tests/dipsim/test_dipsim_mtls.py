"""Transport: the DIP API demands a client certificate from its CA, valid now, belonging to the caller."""

from __future__ import annotations

import ssl

import httpx
import pytest
from conftest import Running, StartDipsim

from dipsim.client import client_context


def get(dip: Running, context: ssl.SSLContext) -> httpx.Response:
    with httpx.Client(verify=context, timeout=5) as http:
        return http.post(
            f"{dip.base_url}/dip-channel/IF-021", content=b"[]", headers={"X-API-Key": "key-acme"}
        )


def test_a_valid_client_certificate_gets_through_tls(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    context = client_context(
        dip.pki.ca.ca_cert, dip.pki.prefix("acme-mtls.crt"), dip.pki.prefix("acme-mtls.key")
    )
    # TLS succeeds; the request then fails on its missing signature, which proves it got in.
    response = get(dip, context)
    assert response.status_code == 401
    assert "missing header" in response.text


@pytest.mark.parametrize(
    "cert", [None, "rogue-mtls", "acme-expired-mtls"], ids=["no-cert", "other-ca", "expired"]
)
def test_it_refuses_connections_without_a_good_client_certificate(
    start_dipsim: StartDipsim, cert: str | None
) -> None:
    dip = start_dipsim()
    context = client_context(
        dip.pki.ca.ca_cert,
        dip.pki.prefix(f"{cert}.crt") if cert else None,
        dip.pki.prefix(f"{cert}.key") if cert else None,
    )
    with pytest.raises(
        (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)
    ):
        get(dip, context)


def test_it_refuses_a_client_certificate_of_another_participant(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    context = client_context(
        dip.pki.ca.ca_cert, dip.pki.prefix("globex-mtls.crt"), dip.pki.prefix("globex-mtls.key")
    )
    response = get(dip, context)
    assert response.status_code == 403
    assert "TLS client certificate" in response.text


def test_a_dcp_certificate_serves_the_participants_behind_it(start_dipsim: StartDipsim) -> None:
    dip = start_dipsim()
    # GLOBEX's API key with the DCP's transport certificate and signing certificate.
    client = dip.client(api_key="key-globex", mtls="dcp-mtls", sign="dcp-sign")
    response = client.request("POST", "/dip-channel/IF-021", [])
    assert response.status_code == 400
    assert response.json()["messageArray"][0]["message"].startswith("MSG1001")
