"""A NUL character anywhere in a request's input is refused with a 400 that names where it was,
before any of it reaches PostgreSQL (whose text cannot hold one, which used to answer 500)."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from tenants import services
from tenants.models import Certificate, Connection
from tests.conftest import PASSWORD


def signed_in(persona) -> Client:
    client = Client()
    assert client.login(username=persona.username, password=PASSWORD)
    return client


def test_a_nul_in_the_username_at_sign_in_is_a_400_not_a_500(world):
    response = Client().post("/login/", {"username": "ali\x00ce", "password": "x"})
    assert response.status_code == 400
    assert "'username' contains a NUL character" in response.content.decode()


def test_a_nul_in_a_form_field_name_is_refused(world):
    response = Client().post("/login/", {"user\x00name": "alice", "password": "x"})
    assert response.status_code == 400
    assert "form field name contains a NUL" in response.content.decode()


@pytest.mark.parametrize(
    ("path", "parameter"),
    [("/certificates/", "message"), ("/activity/", "action"), ("/activity/", "page")],
)
def test_a_nul_in_a_console_query_value_is_refused(world, path, parameter):
    response = signed_in(world.alice).get(path, {parameter: "IF-021\x00"})
    assert response.status_code == 400
    assert f"query parameter '{parameter}' contains a NUL character" in response.content.decode()


def test_a_nul_in_an_api_keys_prefix_is_a_json_400(world):
    response = APIClient().get("/api/v1/identities/", HTTP_X_API_KEY="bb_ab\x00cd_secret")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "X-Api-Key header contains a NUL character" in response.json()["detail"]


def test_an_api_post_with_an_escaped_nul_in_json_is_refused_and_stores_nothing(world):
    with tenant_context(world.acme.id):
        key = services.issue_api_credential(
            name="m", scopes=["read", "certificates"], environment="UIT"
        ).key
        connection_id = Connection.objects.get().id
    body = json.dumps(
        {
            "connection_id": connection_id,
            "purpose": "trust_anchor",
            "bundle_base64": "AAAA",
            "label": "ca\u0000",
        }
    )
    assert "\\u0000" in body
    response = APIClient().post(
        "/api/v1/certificates/",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
    )
    assert response.status_code == 400
    assert response.json()["detail"] == (
        "The request is invalid: the JSON body contains a NUL character."
    )
    with tenant_context(world.acme.id):
        assert not Certificate.objects.exists()


def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(world):
    """``\\\\u0000`` in JSON is a backslash followed by "u0000": ordinary text, let through."""
    with tenant_context(world.acme.id):
        key = services.issue_api_credential(name="r", scopes=["read"], environment="UIT").key
    response = APIClient().post(
        "/api/v1/certificates/",
        '{"label": "a\\\\u0000"}',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Api-Key {key}",
    )
    # Past the NUL check: refused by the scope check instead (a read key cannot import).
    assert response.status_code == 403


def test_a_nul_in_a_cookie_is_refused(world):
    client = Client()
    client.cookies["sessionid"] = "abc\x00def"
    assert client.get("/login/").status_code == 400
