"""The certificates API: metadata for readers, import and revocation with the right scope."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography import x509
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from tenants import services
from tenants.models import Connection
from tests.pki import TestCA, key_pem, new_key, p12, pem
from tests.redis_keys import purge_queue, queue_length


@pytest.fixture(scope="module")
def ca() -> TestCA:
    return TestCA.create()


@pytest.fixture
def api(world):
    keys = {}
    with tenant_context(world.acme.id):
        keys["acme_read"] = services.issue_api_credential(
            name="r", scopes=["read"], environment="UIT"
        ).key
        keys["acme_manage"] = services.issue_api_credential(
            name="m", scopes=["read", "certificates"], environment="UIT"
        ).key
        keys["acme_connection"] = Connection.objects.get().id
    with tenant_context(world.globex.id):
        keys["globex_manage"] = services.issue_api_credential(
            name="g", scopes=["read", "certificates"], environment="UIT"
        ).key
    return keys


def client(key: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return api


def body(ca: TestCA, *, password: str = "pw") -> str:
    key = new_key()
    return base64.b64encode(p12(key, ca.issue(key.public_key()), password)).decode()


def test_a_managing_key_imports_and_a_reader_sees_metadata_but_no_key(api, ca):
    response = client(api["acme_manage"]).post(
        "/api/v1/certificates/",
        {
            "connection_id": api["acme_connection"],
            "purpose": "mtls",
            "bundle_base64": body(ca),
            "password": "pw",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "staged"
    listing = client(api["acme_read"]).get("/api/v1/certificates/")
    assert [c["purpose"] for c in listing.json()] == ["mtls"]
    text = json.dumps(listing.json())
    assert "PRIVATE" not in text
    assert "private_key" not in text


def test_errors_name_the_problem_and_store_nothing(api, ca):
    manage = client(api["acme_manage"])
    wrong = manage.post(
        "/api/v1/certificates/",
        {
            "connection_id": api["acme_connection"],
            "purpose": "mtls",
            "bundle_base64": body(ca),
            "password": "nope",
        },
        format="json",
    )
    assert wrong.status_code == 400
    assert "wrong password" in json.dumps(wrong.json())
    junk = manage.post(
        "/api/v1/certificates/",
        {"connection_id": api["acme_connection"], "purpose": "mtls", "bundle_base64": "%%%"},
        format="json",
    )
    assert junk.json()["errors"]["bundle_base64"] == ["not valid base64"]
    assert client(api["acme_read"]).get("/api/v1/certificates/").json() == []


def test_a_read_only_key_cannot_import(api, ca):
    response = client(api["acme_read"]).post(
        "/api/v1/certificates/",
        {
            "connection_id": api["acme_connection"],
            "purpose": "trust_anchor",
            "bundle_base64": base64.b64encode(pem(ca.cert)).decode(),
        },
        format="json",
    )
    assert response.status_code == 403


def test_globex_cannot_touch_acmes_connection_or_certificates(api, ca):
    globex = client(api["globex_manage"])
    imported = globex.post(
        "/api/v1/certificates/",
        {
            "connection_id": api["acme_connection"],
            "purpose": "trust_anchor",
            "bundle_base64": base64.b64encode(pem(ca.cert)).decode(),
        },
        format="json",
    )
    assert imported.status_code == 404
    key = new_key()
    mine = (
        client(api["acme_manage"])
        .post(
            "/api/v1/certificates/",
            {
                "connection_id": api["acme_connection"],
                "purpose": "signing",
                "bundle_base64": base64.b64encode(
                    pem(ca.issue(key.public_key())) + key_pem(key)
                ).decode(),
            },
            format="json",
        )
        .json()
    )
    assert (
        globex.post(f"/api/v1/certificates/{mine['id']}/revoke/", {"reason": "x"}).status_code
        == 404
    )
    revoked = client(api["acme_manage"]).post(
        f"/api/v1/certificates/{mine['id']}/revoke/", {"reason": "key compromise"}
    )
    assert revoked.json()["status"] == "revoked"


def test_a_rotation_is_queued_for_a_worker_and_never_runs_in_the_request(
    api, ca, django_capture_on_commit_callbacks
):

    key = new_key()
    staged = (
        client(api["acme_manage"])
        .post(
            "/api/v1/certificates/",
            {
                "connection_id": api["acme_connection"],
                "purpose": "signing",
                "bundle_base64": base64.b64encode(
                    pem(ca.issue(key.public_key())) + key_pem(key)
                ).decode(),
            },
            format="json",
        )
        .json()
    )
    purge_queue("maintenance")
    with django_capture_on_commit_callbacks(execute=True):
        response = client(api["acme_manage"]).post(f"/api/v1/certificates/{staged['id']}/rotate/")
    assert response.status_code == 202
    assert queue_length("maintenance") == 1
    purge_queue("maintenance")
    assert (
        client(api["globex_manage"])
        .post(f"/api/v1/certificates/{staged['id']}/rotate/")
        .status_code
        == 404
    )
    assert (
        client(api["acme_read"]).post(f"/api/v1/certificates/{staged['id']}/rotate/").status_code
        == 403
    )


def test_a_client_system_generates_a_csr_attaches_the_signed_certificate_and_activates_it(api, ca):
    manage = client(api["acme_manage"])
    made = manage.post(
        "/api/v1/certificates/csr/",
        {
            "connection_id": api["acme_connection"],
            "purpose": "signing",
            "common_name": "sign.acme.example",
            "organization": "Acme Energy",
            "key_size": 2048,
        },
        format="json",
    )
    assert made.status_code == 201, made.content
    requested = made.json()
    assert requested["status"] == "requested"
    assert "PRIVATE KEY" not in made.content.decode()
    csr = x509.load_pem_x509_csr(requested["csr_pem"].encode())
    assert csr.is_signature_valid

    # Something that is not a certificate is refused with its reason, and nothing changes.
    wrong = manage.post(
        f"/api/v1/certificates/{requested['id']}/signed/",
        {"certificate_pem": "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"},
        format="json",
    )
    assert wrong.status_code == 400
    assert "certificate" in wrong.content.decode().lower()
    # Nor may a reader attach one.
    reader = client(api["acme_read"]).post(
        f"/api/v1/certificates/{requested['id']}/signed/",
        {"certificate_pem": pem(ca.issue(csr.public_key())).decode()},
        format="json",
    )
    assert reader.status_code == 403

    signed = manage.post(
        f"/api/v1/certificates/{requested['id']}/signed/",
        {
            "certificate_pem": pem(
                ca.issue(csr.public_key(), common_name="sign.acme.example")
            ).decode()
        },
        format="json",
    )
    assert signed.status_code == 200, signed.content
    assert signed.json()["status"] == "staged"
    assert signed.json()["fingerprint_sha256"]
    active = manage.post(f"/api/v1/certificates/{requested['id']}/activate/")
    assert active.status_code == 200, active.content
    assert active.json()["status"] == "active"
    listed = {c["id"]: c["status"] for c in manage.get("/api/v1/certificates/").json()}
    assert listed[requested["id"]] == "active"

    # A second certificate for the same use is not activated over the first: that is a rotation.
    key = new_key()
    second = manage.post(
        "/api/v1/certificates/",
        {
            "connection_id": api["acme_connection"],
            "purpose": "signing",
            "bundle_base64": base64.b64encode(
                pem(ca.issue(key.public_key())) + key_pem(key)
            ).decode(),
        },
        format="json",
    )
    assert second.status_code == 201, second.content
    refused = manage.post(f"/api/v1/certificates/{second.json()['id']}/activate/")
    assert refused.status_code == 400
    assert "rotate instead" in refused.content.decode()

    # Another tenant's key finds nothing there.
    other = client(api["globex_manage"]).post(f"/api/v1/certificates/{requested['id']}/activate/")
    assert other.status_code == 404
