"""Response headers: nothing tenant-related is cached, and the CSP allows no inline script or style
(and no page needs any)."""

from __future__ import annotations

import re

import pytest
from django.core.cache import cache
from django.test import Client, override_settings
from rest_framework.test import APIClient

from core.tenancy import tenant_context
from tenants import services
from tests.conftest import PASSWORD

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
EVENT_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"<[^>]+\sstyle\s*=", re.IGNORECASE)
STYLE_ELEMENT = re.compile(r"<style[\s>]", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _clear_throttle():
    cache.clear()
    yield
    cache.clear()


def signed_in(username: str) -> Client:
    client = Client()
    assert client.post("/login/", {"username": username, "password": PASSWORD}).status_code == 302
    return client


def console_pages(client: Client) -> dict[str, object]:
    paths = [
        "/",
        "/settings/",
        "/certificates/",
        "/activity/",
        "/account/second-factor/",
        "/account/password/",
        "/flows/",
    ]
    return {path: client.get(path) for path in paths}


def directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    parsed = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            parsed[words[0]] = words[1:]
    return parsed


def test_no_console_or_api_answer_may_be_stored(world):
    alice = signed_in("alice")
    responses = console_pages(alice)
    responses["/login/"] = Client().get("/login/")
    with tenant_context(world.acme.id):
        key = services.issue_api_credential(name="crm", scopes=["read"], environment="UIT").key
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    responses["/api/v1/identities/"] = api.get("/api/v1/identities/")
    responses["/api/v1/certificates/"] = api.get("/api/v1/certificates/")
    for path, response in responses.items():
        assert response.status_code == 200, path
        cache_control = response.get("Cache-Control", "")
        assert "no-store" in cache_control, f"{path} may be cached: {cache_control!r}"
        assert "private" in cache_control, path


def test_pages_carry_a_csp_without_inline_script_and_need_none(world):
    responses = console_pages(signed_in("alice"))
    responses["/login/"] = Client().get("/login/")
    for path, response in responses.items():
        policy = directives(response)
        assert policy["script-src"] == ["'self'"], path
        assert policy["style-src"] == ["'self'"], path
        assert policy["object-src"] == ["'none'"], path
        assert policy["frame-ancestors"] == ["'none'"], path
        page = response.content.decode()
        assert not INLINE_SCRIPT.search(page), f"{path}: {INLINE_SCRIPT.search(page)}"
        assert not EVENT_HANDLER.search(page), f"{path}: {EVENT_HANDLER.search(page)}"
        assert not STYLE_ATTRIBUTE.search(page), f"{path}: {STYLE_ATTRIBUTE.search(page)}"
        assert not STYLE_ELEMENT.search(page), path


def test_the_tenant_switcher_and_expiry_bars_work_without_inline_code(world):
    with tenant_context(world.globex.id):
        services.add_member(user=world.alice.user, roles=["viewer"])
    page = signed_in("alice").get("/").content.decode()
    assert "data-autosubmit" in page
    assert "console/console.js" in page


def test_the_api_docs_page_runs_no_inline_script_and_loads_nothing_from_outside(world):
    response = Client().get("/api/v1/docs/")
    page = response.content.decode()
    assert not INLINE_SCRIPT.search(page)
    assert "googleapis" not in page
    assert directives(response)["script-src"] == ["'self'"]


@pytest.mark.django_db(databases=["default", "support"])
def test_staff_pages_need_no_inline_script_either(world):
    from tests.console.test_support import staff_client

    sam = staff_client(verified=True)
    for path in ("/support/", "/staff/admin/", "/staff/admin/tenants/tenant/"):
        response = sam.get(path)
        assert response.status_code == 200, path
        page = response.content.decode()
        assert not INLINE_SCRIPT.search(page), f"{path}: {INLINE_SCRIPT.search(page)}"
        assert not EVENT_HANDLER.search(page), path
        assert "no-store" in response["Cache-Control"], path
        assert directives(response)["script-src"] == ["'self'"], path


@override_settings(SECURE_HSTS_SECONDS=63072000, SESSION_COOKIE_SECURE=True)
def test_over_https_the_answer_carries_hsts_and_a_secure_session_cookie(world):
    client = Client()
    response = client.post("/login/", {"username": "alice", "password": PASSWORD}, secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=63072000")
    assert response.cookies["sessionid"]["secure"]
