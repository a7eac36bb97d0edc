"""The REST API: API-key authentication, scopes, tenant isolation, OpenAPI schema."""

from __future__ import annotations

import re

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


def test_a_revoked_key_gets_the_same_answer_as_an_unknown_one(world, keys):
    with tenant_context(world.acme.id):
        services.revoke_api_credential(credential=keys["acme_credential"], actor="alice")
    revoked = client(keys["acme"]).get("/api/v1/identities/")
    prefix, secret = keys["acme"].split("_", 2)[1:]
    unknown = client(f"bb_{'f' * len(prefix)}_{secret}").get("/api/v1/identities/")
    odd_prefix = client(f"bb_NOT-HEX_{secret}").get("/api/v1/identities/")
    for response in (revoked, unknown, odd_prefix):
        assert response.status_code == 401
        assert response.json() == {"detail": "invalid API key"}
        assert response["WWW-Authenticate"] == revoked["WWW-Authenticate"]


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


@pytest.fixture
def environments(world, keys):
    """acme's identity also reaches PRD, with a channel and a key of each environment."""
    from tenants.models import Connection, DipIdentity

    with tenant_context(world.acme.id):
        prd = services.create_connection(
            identity=DipIdentity.objects.get(),
            environment="PRD",
            dip_base_url="https://dip-prd.example",
            api_key="acme-prd-dip-api-key",
        )
        prd_channel = services.create_channel(
            connection=prd, interface_id="IF-021", direction="inbound"
        )
        prd_key = services.issue_api_credential(
            name="prd", scopes=["read", "certificates"], environment="PRD"
        ).key
        uit_key = services.issue_api_credential(
            name="uit", scopes=["read", "certificates"], environment="UIT"
        ).key
        uit = Connection.objects.get(environment="UIT")
    return {
        "prd_key": prd_key,
        "uit_key": uit_key,
        "prd_channel": prd_channel.id,
        "uit_channel": keys["acme_channel"],
        "prd_connection": prd.id,
        "uit_connection": uit.id,
    }


def test_a_key_acts_only_in_the_environment_it_was_issued_for(environments):
    uit, prd = client(environments["uit_key"]), client(environments["prd_key"])
    assert uit.get(f"/api/v1/channels/{environments['uit_channel']}/").status_code == 200
    assert prd.get(f"/api/v1/channels/{environments['prd_channel']}/").status_code == 200
    # Another environment's channel is not found, like another tenant's.
    assert uit.get(f"/api/v1/channels/{environments['prd_channel']}/").status_code == 404
    assert prd.get(f"/api/v1/channels/{environments['uit_channel']}/").status_code == 404
    identities = prd.get("/api/v1/identities/").json()
    assert [c["environment"] for i in identities for c in i["connections"]] == ["PRD"]
    assert [c["id"] for i in identities for c in i["connections"]] == [
        environments["prd_connection"]
    ]


def test_a_uit_key_cannot_import_revoke_or_rotate_prd_certificates(environments):
    import base64

    from tests.pki import TestCA, key_pem, new_key, pem

    ca = TestCA.create()
    key = new_key()
    bundle = base64.b64encode(pem(ca.issue(key.public_key())) + key_pem(key)).decode()
    uit, prd = client(environments["uit_key"]), client(environments["prd_key"])
    refused = uit.post(
        "/api/v1/certificates/",
        {
            "connection_id": environments["prd_connection"],
            "purpose": "signing",
            "bundle_base64": bundle,
        },
        format="json",
    )
    assert refused.status_code == 404
    staged = prd.post(
        "/api/v1/certificates/",
        {
            "connection_id": environments["prd_connection"],
            "purpose": "signing",
            "bundle_base64": bundle,
        },
        format="json",
    )
    assert staged.status_code == 201, staged.content
    certificate_id = staged.json()["id"]
    assert uit.get("/api/v1/certificates/").json() == []
    assert [c["id"] for c in prd.get("/api/v1/certificates/").json()] == [certificate_id]
    assert uit.post(f"/api/v1/certificates/{certificate_id}/rotate/").status_code == 404
    revoke = uit.post(f"/api/v1/certificates/{certificate_id}/revoke/", {"reason": "x"})
    assert revoke.status_code == 404
    assert prd.get("/api/v1/certificates/").json()[0]["status"] == "staged"


def _last_used(world, credential_id):
    from tenants.models import ApiCredential

    with tenant_context(world.acme.id):
        return ApiCredential.objects.get(id=credential_id).last_used_at


def _set_last_used(world, credential_id, value):
    from tenants.models import ApiCredential

    with tenant_context(world.acme.id):
        ApiCredential.objects.filter(id=credential_id).update(last_used_at=value)


def test_last_used_is_written_at_most_once_a_minute_per_key(world, keys):
    from datetime import timedelta

    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from tenants import authentication

    credential_id = keys["acme_credential"].id
    assert _last_used(world, credential_id) is None
    api = client(keys["acme"])
    assert api.get("/api/v1/identities/").status_code == 200
    first = _last_used(world, credential_id)
    assert first is not None
    # Within the minute this process does not even ask the database.
    with CaptureQueriesContext(connection) as queries:
        assert api.get("/api/v1/identities/").status_code == 200
    assert not [q for q in queries.captured_queries if "last_used_at" in q["sql"]]
    assert _last_used(world, credential_id) == first
    # Another process (no memory of this key) writes only when the last write is a minute old.
    authentication._recently_used.clear()
    recent = timezone.now() - timedelta(seconds=30)
    _set_last_used(world, credential_id, recent)
    assert api.get("/api/v1/identities/").status_code == 200
    assert _last_used(world, credential_id) == recent
    authentication._recently_used.clear()
    stale = timezone.now() - timedelta(minutes=2)
    _set_last_used(world, credential_id, stale)
    assert api.get("/api/v1/identities/").status_code == 200
    assert _last_used(world, credential_id) > stale + timedelta(seconds=90)


def test_the_schema_declares_the_key_scheme_for_every_operation(db):
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": schema["components"]["securitySchemes"]["ApiKey"]["description"],
    }
    operations = [
        operation
        for path in schema["paths"].values()
        for method, operation in path.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]
    assert operations
    # The evidence public key is published for anyone (an auditor compares it with a copy from
    # another route): that one operation says it takes no credentials; every other takes a key.
    public = {"evidence_key_retrieve"}
    assert {
        operation["operationId"]: operation["security"]
        for operation in operations
        if operation["operationId"] in public or operation["security"] != [{"ApiKey": []}]
    } == {operation_id: [{}] for operation_id in public}


def test_swagger_ui_offers_to_authorise_with_the_key_and_has_no_inline_script(db):
    page = APIClient().get("/api/v1/docs/try/")
    assert page.status_code == 200
    body = page.content.decode()
    assert "swagger-ui" in body.lower()
    assert "cdn" not in body.lower()
    # Every <script> loads from a URL; none carries code inline.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", body) == []
    script = APIClient().get("/api/v1/docs/try/?script=")
    assert script.status_code == 200
    assert "/api/v1/schema/" in script.content.decode()


@pytest.mark.parametrize("path", ["/api/v1/nope/", "/api/v1/channels/abc/", "/api/v2/identities/"])
def test_unknown_api_paths_answer_json(db, path):
    response = APIClient().get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_unknown_console_paths_still_answer_a_page(db):
    response = APIClient().get("/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_options_describes_nothing_and_looks_nothing_up(world, keys):
    """The schema is the API's description; OPTIONS on another tenant's channel used to answer
    200 (DRF's self-description) without looking the channel up."""
    response = client(keys["globex"]).options(f"/api/v1/channels/{keys['acme_channel']}/")
    assert response.status_code == 405


def test_an_environment_context_without_an_environment_shows_nothing(world):
    from core.tenancy import environment_context
    from tenants import selectors

    with tenant_context(world.acme.id):
        assert len(selectors.list_connections()) == 1
        with environment_context(""):
            assert selectors.list_connections() == []
            assert selectors.list_channels() == []
            assert selectors.list_identities() == []
