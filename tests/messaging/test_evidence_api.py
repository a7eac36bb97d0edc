"""The evidence API: request a pack, poll it, download it; another tenant's key sees nothing."""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta
from io import BytesIO

import pytest
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from messaging.evidence import keys, packs
from messaging.models import EvidencePack
from tenants import services


@pytest.fixture
def api_keys(world):
    with tenant_context(world.acme.id):
        acme = services.issue_api_credential(name="assurance", scopes=["read"], environment="UIT")
    with tenant_context(world.globex.id):
        globex = services.issue_api_credential(name="crm", scopes=["read"], environment="UIT")
    return {"acme": acme.key, "globex": globex.key}


def client(key: str | None = None) -> APIClient:
    api = APIClient()
    if key:
        api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return api


def test_a_client_requests_polls_and_downloads_a_pack(world, api_keys, settings):
    settings.BUSBAR_EVIDENCE_SETTLE_SECONDS = 0
    now = datetime.now(UTC)
    created = client(api_keys["acme"]).post(
        "/api/v1/evidence-packs/",
        {
            "period_from": (now - timedelta(days=1)).isoformat(),
            "period_to": (now - timedelta(seconds=1)).isoformat(),
            "interfaces": ["IF-021"],
        },
        format="json",
    )
    assert created.status_code == 202, created.content
    pack_id = created.json()["id"]
    assert created.json()["state"] == "queued"
    assert (
        client(api_keys["acme"]).get(f"/api/v1/evidence-packs/{pack_id}/download/").status_code
        == 404
    )
    packs.generate_pack(tenant_id=world.acme.id, pack_id=pack_id)
    status = client(api_keys["acme"]).get(f"/api/v1/evidence-packs/{pack_id}/").json()
    assert (status["state"], status["progress"]) == ("ready", 100)
    download = client(api_keys["acme"]).get(f"/api/v1/evidence-packs/{pack_id}/download/")
    assert download.status_code == 200
    with zipfile.ZipFile(BytesIO(b"".join(download.streaming_content))) as z:
        assert "manifest.sig" in z.namelist()
    for path in (
        f"/api/v1/evidence-packs/{pack_id}/",
        f"/api/v1/evidence-packs/{pack_id}/download/",
    ):
        assert client(api_keys["globex"]).get(path).status_code == 404


def test_a_bad_request_names_each_problem_and_stores_nothing(world, api_keys):
    response = client(api_keys["acme"]).post(
        "/api/v1/evidence-packs/",
        {
            "period_from": "not a date",
            "period_to": datetime.now(UTC).isoformat(),
            "interfaces": ["IF21"],
        },
        format="json",
    )
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "wrong format" in errors["period_from"][0]
    assert "interfaces" in errors
    unsettled = client(api_keys["acme"]).post(
        "/api/v1/evidence-packs/",
        {"period_from": "2026-01-01T00:00:00Z", "period_to": datetime.now(UTC).isoformat()},
        format="json",
    )
    assert unsettled.status_code == 400
    assert "choose a period ending by" in str(unsettled.json())
    ancient = client(api_keys["acme"]).post(
        "/api/v1/evidence-packs/",
        {"period_from": "0046-08-28T08:44:24Z", "period_to": "2026-01-01T00:00:00Z"},
        format="json",
    )
    assert ancient.status_code == 400
    assert "Busbar holds nothing older" in ancient.json()["errors"]["period_from"][0]
    with tenant_context(world.acme.id):
        assert not EvidencePack.objects.exists()


def test_the_evidence_key_needs_no_credentials(db):
    body = client().get("/api/v1/evidence/key/").json()
    assert body["key_id"] == keys.key_id()
    assert body["public_key_pem"].encode() == keys.public_key_pem()


def test_the_schema_documents_the_evidence_operations(db):
    schema = client().get("/api/v1/schema/?format=json").json()
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert {
        "evidence_packs_create",
        "evidence_packs_retrieve",
        "evidence_packs_download",
        "evidence_key_retrieve",
    } <= operations
