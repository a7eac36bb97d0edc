"""The REST API: API-key authentication, scopes, tenant isolation, OpenAPI schema."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from tenants import services
from tenants.models import Channel


@pytest.fixture
def keys(world):
    with tenant_context(world.acme.id):
        acme = services.issue_api_credential(name="billing", scopes=["read"], environment="UIT")
        acme_submit_only = services.issue_api_credential(
            name="submitter", scopes=["submit"], environment="UIT"
        )
        acme_channel = Channel.objects.get()
    with tenant_context(world.globex.id):
        globex = services.issue_api_credential(name="crm", scopes=["read"], environment="UIT")
    return {
        "acme": acme.key,
        "acme_submit_only": acme_submit_only.key,
        "globex": globex.key,
        "acme_channel": acme_channel.id,
        "acme_credential": acme.credential,
    }


def client(key: str | None = None) -> APIClient:
    api = APIClient()
    if key:
        api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return api


def test_a_client_lists_its_tenants_identities_and_channels(keys):
    response = client(keys["acme"]).get("/api/v1/identities/")
    assert response.status_code == 200
    body = response.json()
    assert [(i["mpid"], i["dip_id"]) for i in body] == [("ACME", "1000000001")]
    channels = body[0]["connections"][0]["channels"]
    assert [(c["interface_id"], c["direction"]) for c in channels] == [("IF-021", "inbound")]


def test_charlie_gets_a_404_for_acmes_channel(keys):
    acme_channel = keys["acme_channel"]
    assert client(keys["acme"]).get(f"/api/v1/channels/{acme_channel}/").status_code == 200
    response = client(keys["globex"]).get(f"/api/v1/channels/{acme_channel}/")
    assert response.status_code == 404
    globex_identities = client(keys["globex"]).get("/api/v1/identities/").json()
    assert [i["mpid"] for i in globex_identities] == ["GLBX"]


def test_the_x_api_key_header_works_too(keys):
    response = APIClient().get("/api/v1/identities/", HTTP_X_API_KEY=keys["acme"])
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "Authentication credentials were not provided."),
        ("nonsense", "malformed API key: expected bb_<prefix>_<secret>"),
        ("bb_000000000000_wrongsecret", "invalid API key"),
    ],
)
def test_bad_keys_get_a_401_naming_the_problem(keys, key, message):
    response = client(key).get("/api/v1/identities/")
    assert response.status_code == 401
    assert response.json()["detail"] == message
    assert response["WWW-Authenticate"].startswith("Api-Key")


def test_a_wrong_secret_for_a_real_prefix_is_refused(keys):
    prefix = keys["acme"].split("_")[1]
    response = client(f"bb_{prefix}_not-the-secret").get("/api/v1/identities/")
    assert response.status_code == 401
    assert response.json()["detail"] == "invalid API key"


def test_a_revoked_key_is_refused(world, keys):
    with tenant_context(world.acme.id):
        services.revoke_api_credential(credential=keys["acme_credential"], actor="alice")
    response = client(keys["acme"]).get("/api/v1/identities/")
    assert response.status_code == 401
    assert response.json()["detail"] == "this API key has been revoked"


def test_a_key_without_the_read_scope_gets_a_403(keys):
    response = client(keys["acme_submit_only"]).get("/api/v1/identities/")
    assert response.status_code == 403
    assert response.json() == {"detail": "this API key lacks the scope this operation needs"}
    # The same tenant's key with the read scope is let through: the scope decided, nothing else.
    assert client(keys["acme"]).get("/api/v1/identities/").status_code == 200


def test_the_key_is_stored_only_as_a_hash(world, keys):
    from django.db import connection

    secret = keys["acme"].split("_", 2)[2]
    with tenant_context(world.acme.id), connection.cursor() as cursor:
        cursor.execute("SELECT secret_hash, prefix FROM tenants_apicredential")
        rows = cursor.fetchall()
    assert rows
    assert all(secret not in value for row in rows for value in row)


def test_the_openapi_schema_and_docs_are_served(db):
    schema = APIClient().get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    assert "/api/v1/identities/" in schema.content.decode()
    docs = APIClient().get("/api/v1/docs/")
    assert docs.status_code == 200
    assert b"redoc" in docs.content.lower()
    assert b"cdn" not in docs.content.lower()
